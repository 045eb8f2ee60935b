"""``python -m mongoledger``: the ``mongoledger`` command."""

import sys

from mongoledger.cli import main

sys.exit(main())
