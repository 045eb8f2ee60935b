"""``python -m mongoledger``: the ``mongoledger`` command."""

from mongoledger.cli import run

run()
