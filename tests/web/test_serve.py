"""``mongoledger users``, the login of ``mongoledger serve``, and ``serve`` end to end."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

from mongoledger import AsyncLedger, Ledger
from mongoledger.cli import main
from mongoledger.memory import AsyncMemoryClient, MemoryClient, MemoryServer
from mongoledger.web._serve import SESSION_COOKIE, LoginLimiter, served_app
from mongoledger.web._users import verify_password
from tests.web.conftest import csrf_of

STDIN = ["--password-stdin"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(argv: list[str], database: Any, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(argv, database=database, stdout=out, stderr=err)
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


# mongoledger users


def test_users_add_list_passwd_remove() -> None:
    db = MemoryClient()["web"]
    code, out, err = run(
        ["users", "add", "alice", "--permission", "view_own", "--account", "user_id=1", *STDIN],
        db,
        "correct horse\n",
    )
    assert code == 0, err
    assert "added user 'alice' (view_own)" in out
    stored = db["web_users"].find_one({"_id": "alice"})
    assert stored["account"] == {"user_id": 1}
    assert stored["permissions"] == ["view own balances"]
    assert stored["password_hash"].startswith("$argon2id$")
    assert "correct horse" not in repr(stored)
    assert verify_password(stored["password_hash"], "correct horse")
    assert run(["users", "add", "root", "--admin", "--password-stdin"], db, "secret-pw\n")[0] == 0
    code, out, _ = run(["users", "list"], db)
    assert code == 0
    assert re.search(r"alice\s+view_own\s+user_id=1", out)
    assert re.search(r"root\s+view_own,view_all,adjust", out)
    code, out, _ = run(["--json", "users", "list"], db)
    assert [u["name"] for u in __import__("json").loads(out)] == ["alice", "root"]
    assert run(["users", "passwd", "alice", "--password-stdin"], db, "new password\n")[0] == 0
    assert verify_password(
        db["web_users"].find_one({"_id": "alice"})["password_hash"], "new password"
    )
    assert run(["users", "remove", "alice"], db)[0] == 0
    assert db["web_users"].find_one({"_id": "alice"}) is None


@pytest.mark.parametrize(
    ("argv", "stdin", "code", "message"),
    [
        (["users", "add", "bob", "--password-stdin"], "longenough\n", 2, "--permission"),
        (["users", "add", "bob", "--admin", "--password-stdin"], "short\n", 2, "at least 8"),
        (["users", "add", "bob", "--admin", "--password-stdin"], "", 2, "empty"),
        (["users", "add", "bob", "--admin"], "longenough\n", 2, "no terminal"),
        (["users", "add", "b/ob", "--admin", "--password-stdin"], "longenough\n", 2, "user name"),
        (["users", "add", "bob", "--admin", "--password", "x"], "", 2, ""),
        (["users", "remove", "nobody"], "", 1, "no user 'nobody'"),
        (["users", "passwd", "nobody", "--password-stdin"], "longenough\n", 1, "no user"),
    ],
)
def test_users_refusals(argv: list[str], stdin: str, code: int, message: str) -> None:
    db = MemoryClient()["web"]
    got, _, err = run(argv, db, stdin)
    assert got == code
    assert message in err
    assert db["web_users"].count_documents({}) == 0


def test_users_add_refuses_an_existing_name() -> None:
    db = MemoryClient()["web"]
    assert run(["users", "add", "bob", "--admin", "--password-stdin"], db, "longenough\n")[0] == 0
    code, _, err = run(["users", "add", "bob", "--admin", "--password-stdin"], db, "otherpass\n")
    assert code == 1
    assert "exists" in err


# The login


def test_login_limiter_counts_failures_in_a_window() -> None:
    now = [1000.0]
    limiter = LoginLimiter(max_failures=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("ip:a", "user:x") == 0
        limiter.failed("ip:a", "user:x")
    assert limiter.retry_after("ip:a") == 60
    assert limiter.retry_after("user:x", "ip:b") == 60
    assert limiter.retry_after("ip:b", "user:y") == 0
    now[0] += 30
    assert limiter.retry_after("ip:a") == 30
    now[0] += 30
    assert limiter.retry_after("ip:a", "user:x") == 0
    limiter.failed("user:y")
    limiter.succeeded("user:y")
    assert limiter._failures.get("user:y") is None


class Site:
    def __init__(self, limiter: LoginLimiter | None = None) -> None:
        server = MemoryServer()
        self.sync = MemoryClient(server=server)["web"]
        ledger = Ledger(self.sync)
        self.alice = ledger.open_account({"user_id": 1})
        ledger.increase(self.alice, 1234)
        for name, options in (
            ("alice", ["--permission", "view_own", "--account", "user_id=1"]),
            ("admin", ["--admin"]),
        ):
            argv = ["users", "add", name, *options, "--password-stdin"]
            assert run(argv, self.sync, f"{name}-password\n")[0] == 0
        database = AsyncMemoryClient(server=server)["web"]
        self.app = served_app(
            AsyncLedger(database),
            database["web_users"],
            secret_key=b"k" * 32,
            limiter=limiter,
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
        )


async def login(
    client: httpx.AsyncClient, name: str, password: str, nxt: str = ""
) -> httpx.Response:
    form = await client.get("/login" + (f"?next={nxt}" if nxt else ""))
    fields = {"username": name, "password": password, "csrf_token": csrf_of(form.text)}
    if nxt:
        fields["next"] = nxt
    return await client.post("/login", data=fields)


@pytest.fixture
def site() -> Site:
    return Site()


async def test_anonymous_visitors_get_the_login_page_never_data(site: Site) -> None:
    async with site.client() as client:
        home = await client.get("/")
        assert home.status_code == 303
        assert home.headers["location"] == "/login?next=%2F"
        sheet = await client.get("/admin/reports/balances?sort=id")
        assert sheet.headers["location"] == "/login?next=%2Fadmin%2Freports%2Fbalances%3Fsort%3Did"
        api = await client.get("/api/balances")
        assert api.status_code == 401
        assert "12.34" not in api.text
        page = await client.get("/login")
        assert page.status_code == 200
        assert 'autocomplete="current-password"' in page.text


async def test_login_session_and_logout(site: Site) -> None:
    async with site.client() as client:
        wrong = await login(client, "alice", "not-her-password")
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text
        assert SESSION_COOKIE not in client.cookies
        ok = await login(client, "alice", "alice-password", nxt="/balance")
        assert ok.status_code == 303
        assert ok.headers["location"] == "/balance"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=lax" in cookie
        sheet = await client.get("/balance")
        assert sheet.status_code == 200
        assert "12.34" in sheet.text
        assert (await client.get("/admin/reports/balances")).status_code == 403
        logout = await client.post("/logout", data={"csrf_token": csrf_of(sheet.text)})
        assert logout.status_code == 303
        assert (await client.get("/balance")).status_code == 303  # back to the login page


async def test_logout_needs_the_csrf_token(site: Site) -> None:
    async with site.client() as client:
        await login(client, "alice", "alice-password")
        assert (await client.post("/logout", data={})).status_code == 403
        assert (await client.get("/balance")).status_code == 200


async def test_login_needs_the_csrf_token(site: Site) -> None:
    async with site.client() as client:
        await client.get("/login")
        response = await client.post(
            "/login", data={"username": "alice", "password": "alice-password"}
        )
        assert response.status_code == 403
        assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/\\evil", "x"])
async def test_login_never_redirects_off_site(site: Site, target: str) -> None:
    async with site.client() as client:
        response = await login(client, "alice", "alice-password", nxt=target)
        assert response.headers["location"] == "/"


async def test_a_new_password_or_removal_ends_sessions(site: Site) -> None:
    async with site.client() as client:
        await login(client, "alice", "alice-password")
        assert (await client.get("/balance")).status_code == 200
        assert (
            run(["users", "passwd", "alice", "--password-stdin"], site.sync, "another-pw\n")[0] == 0
        )
        assert (await client.get("/balance")).status_code == 303
        await login(client, "alice", "another-pw")
        assert (await client.get("/balance")).status_code == 200
        assert run(["users", "remove", "alice"], site.sync)[0] == 0
        assert (await client.get("/balance")).status_code == 303


async def test_a_tampered_session_cookie_is_anonymous(site: Site) -> None:
    async with site.client() as client:
        await login(client, "alice", "alice-password")
        value = client.cookies[SESSION_COOKIE]
        payload, _, signature = value.partition(".")
        import base64
        import json

        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        data["u"] = "admin"
        forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        client.cookies.set(SESSION_COOKIE, f"{forged}.{signature}")
        assert (await client.get("/admin/reports/balances")).status_code == 303


async def test_failed_logins_are_rate_limited() -> None:
    site = Site(LoginLimiter(max_failures=3, window=300))
    async with site.client() as client:
        for _ in range(3):
            assert (await login(client, "admin", "guess")).status_code == 401
        limited = await login(client, "admin", "admin-password")  # even the right one
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 0
        assert "Too many failed logins" in limited.text
        assert SESSION_COOKIE not in client.cookies


# mongoledger serve, end to end in a subprocess


def test_serve_end_to_end_in_a_subprocess() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "mongoledger", "--memory", "serve", "--demo", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        code = _drive_served_demo(process)
    assert code == 0


def _drive_served_demo(process: subprocess.Popen[str]) -> int | None:
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", first)
        assert match, first + (process.stderr.read() if process.stderr else "")
        url = match.group(1)
        logins = {}
        for _ in range(2):
            login_line = re.match(r"demo login: (\w+) / (\S+)", process.stdout.readline())
            assert login_line
            logins[login_line.group(1)] = login_line.group(2)
        with httpx.Client(base_url=url, timeout=20) as client:
            assert client.get("/api/balances").status_code == 401
            assert client.get("/").headers["location"] == "/login?next=%2F"
            form = client.get("/login")
            response = client.post(
                "/login",
                data={
                    "username": "admin",
                    "password": logins["admin"],
                    "csrf_token": csrf_of(form.text),
                },
            )
            assert response.status_code == 303
            report = client.get("/admin/reports/balances")
            assert report.status_code == 200
            assert "virtual-money" in report.text
            assert "$62.00" in report.text  # alice's wallet after the demo scenario
            logout = client.post("/logout", data={"csrf_token": csrf_of(report.text)})
            assert logout.status_code == 303
            assert client.get("/admin/reports/balances").status_code == 303
            assert client.get("/api/balances").status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(20)
        finally:
            if process.poll() is None:
                process.kill()
    return code


def test_serve_demo_refuses_a_database_with_data() -> None:
    db = MemoryClient()["web"]
    Ledger(db).increase({"user_id": 1}, 5)
    code, _, err = run(["serve", "--demo", "--port", "0"], db)
    assert code == 1
    assert "empty database" in err


async def test_serve_expires_holds_in_the_background_once_the_ledger_has_them() -> None:
    import asyncio

    from mongoledger.web._serve import _expire_holds_forever

    third = asyncio.Event()

    class Holding:
        calls = 0

        async def expire_holds(self) -> int:
            Holding.calls += 1
            if Holding.calls == 2:
                raise RuntimeError("a failed sweep does not stop the next")
            if Holding.calls == 3:
                third.set()
            return 0

    task = asyncio.create_task(_expire_holds_forever(Holding(), 0.001))  # type: ignore[arg-type]
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A ledger without holds: nothing to run, the task ends at once.
    await asyncio.wait_for(_expire_holds_forever(object(), 0.001), 1)  # type: ignore[arg-type]
