"""Real-browser tests: headless Chromium (Debian's) driven by Playwright.

The browser comes from the system (``apt-get install chromium``; ``.ci/run`` installs it),
launched by its path: ``playwright install`` cannot download here. Without a browser the tests
skip with the reason, except in CI (``CI`` set), where a missing browser fails them.

Set ``MONGOLEDGER_UPDATE_SCREENSHOTS=1`` to rewrite the README's screenshot
(``docs/web-balance-sheet.png``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mongoledger import AsyncLedger, Ledger
from mongoledger._format import CurrencyFormat
from mongoledger.cli._values import account_id_text
from mongoledger.demo import run_demo
from mongoledger.memory import AsyncMemoryClient, MemoryClient, MemoryServer
from mongoledger.web._serve import served_app
from tests.web._server import ThreadServer
from tests.web.test_serve import run

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "web-balance-sheet.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORDS = {"alice": "alice-password", "admin": "admin-password"}
WALLET = {"user_id": 1, "type": "virtual-money"}
BOB_WALLET = {"user_id": 2, "type": "virtual-money"}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "no Chromium on this machine: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    return path


@dataclass
class Site:
    url: str
    writer: Ledger
    money: CurrencyFormat

    def account(self, attributes: dict[str, Any]) -> Any:
        return self.writer.get_account(attributes)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    server = MemoryServer()
    sync = MemoryClient(server=server)["demo"]
    writer = Ledger(sync)
    money = CurrencyFormat(symbol="$")
    assert run_demo(out=io.StringIO(), money=money, use_watch=False, ledger=writer) == 0
    for name, options in (
        (
            "alice",
            [
                "--permission",
                "view_own",
                "--account",
                "user_id=1",
                "--account",
                "type=virtual-money",
            ],
        ),
        ("admin", ["--admin"]),
    ):
        code, _, err = run(
            ["users", "add", name, *options, "--password-stdin"], sync, f"{PASSWORDS[name]}\n"
        )
        assert code == 0, err
    database = AsyncMemoryClient(server=server)["demo"]
    app = served_app(
        AsyncLedger(database), database["web_users"], secret_key=b"s" * 32, money=money
    )
    with ThreadServer(app) as url:
        yield Site(url, Ledger(MemoryClient(server=server)["demo"]), money)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


def log_in(page: Any, site: Site, name: str) -> None:
    page.goto(site.url + "/")
    assert "/login" in page.url  # anonymous visitors land on the login page
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.keyboard.press("Enter")  # the form works from the keyboard
    page.wait_for_url(re.compile(r"/(balance|admin/reports/balances)$"))


def test_log_in_and_view_own_sheet(page: Any, site: Site) -> None:
    from playwright.sync_api import expect

    log_in(page, site, "alice")
    expect(page.get_by_role("heading", name="Balance sheet")).to_be_visible()
    wallet = site.account(WALLET)
    expect(page.locator("#balance")).to_have_text(site.money.format(wallet.balance))
    expect(page.get_by_role("table")).to_contain_text("pro-plan")  # extra data is shown
    expect(page.get_by_role("link", name="All balances")).to_have_count(0)
    path = SCREENSHOT if os.environ.get("MONGOLEDGER_UPDATE_SCREENSHOTS") else None
    if path is not None:
        path.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        assert path.read_bytes().startswith(b"\x89PNG")


def test_refused_another_users_sheet(page: Any, site: Site) -> None:
    from playwright.sync_api import expect

    log_in(page, site, "alice")
    bob = site.account(BOB_WALLET)
    response = page.goto(f"{site.url}/user/{account_id_text(bob.id)}/balance")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    assert site.money.format(bob.balance) not in page.content()


def test_admin_adjusts_with_the_form_and_sees_the_new_balance(page: Any, site: Site) -> None:
    from playwright.sync_api import expect

    log_in(page, site, "admin")
    bob = site.account(BOB_WALLET)
    page.get_by_role("link", name="Adjust").click()
    page.get_by_label("Credit (increase)").check()
    page.get_by_label("Account", exact=True).fill(account_id_text(bob.id))
    page.get_by_label("Amount").fill("5.25")
    page.get_by_label("Message").fill("goodwill <credit>")
    page.get_by_role("button", name="Write").click()
    expect(page.get_by_role("heading", name="Increase written")).to_be_visible()
    new_balance = site.money.format(bob.balance + 525)
    expect(page.get_by_role("status")).to_contain_text(new_balance)
    page.get_by_role("status").get_by_role("link").first.click()
    expect(page.locator("#balance")).to_have_text(new_balance)
    expect(page.get_by_role("table")).to_contain_text("goodwill <credit>")
    assert site.account(BOB_WALLET).balance == bob.balance + 525


def test_a_write_from_python_appears_live_on_an_open_sheet(page: Any, site: Site) -> None:
    from playwright.sync_api import expect

    log_in(page, site, "alice")
    wallet = site.account(WALLET)
    balance = page.locator("#balance")
    expect(balance).to_have_text(site.money.format(wallet.balance))
    # Once the page's event stream is open, a payment made elsewhere, by another client:
    expect(balance).to_have_attribute("data-live-state", "open")
    site.writer.increase(wallet.id, 250, {"note": "cashback"})
    expect(balance).to_have_text(site.money.format(wallet.balance + 250))
    expect(page.locator("#live-note")).to_contain_text("New increase +$2.50")
    page.get_by_role("link", name="Reload the sheet").click()
    expect(page.get_by_role("table")).to_contain_text("cashback")
