"""Balance pages and a JSON API for a mongoledger ledger (``pip install mongoledger[web]``).

Drupal Balance Tracker's user interface, as an ASGI app to mount in a FastAPI/Starlette
service (under any prefix) or to run with ``mongoledger serve``::

    from fastapi import FastAPI, Request
    from mongoledger import AsyncLedger
    from mongoledger.web import VIEW_ALL, VIEW_OWN, Viewer, create_app

    def identify(request: Request) -> Viewer | None:     # your authentication
        user = request.state.user
        if user is None:
            return None
        return Viewer(user.name, account={"user_id": user.id, "type": "wallet"},
                      permissions={VIEW_OWN} | ({VIEW_ALL} if user.is_staff else set()))

    service = FastAPI()
    service.mount("/ledger", create_app(AsyncLedger(db), identify=identify))

Pages: ``/balance`` (own balance sheet), ``/user/{account_id}/balance``,
``/user/{account_id}/statistics``, ``/admin/reports/balances``,
``/admin/reports/statistics``, ``/admin/adjust``. JSON under ``/api`` (the OpenAPI document
is ``/api/openapi.json``). Permissions: ``VIEW_OWN``, ``VIEW_ALL``, ``ADJUST``.
``CurrencyFormat`` (the command line's money format) sets how amounts are shown.
"""

from mongoledger._format import CurrencyFormat
from mongoledger.web._app import create_app
from mongoledger.web._permissions import ADJUST, VIEW_ALL, VIEW_OWN, Viewer

__all__ = ["ADJUST", "VIEW_ALL", "VIEW_OWN", "CurrencyFormat", "Viewer", "create_app"]
