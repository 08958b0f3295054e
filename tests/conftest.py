"""Fixtures shared by the whole suite. See tests/README.md."""

import contextlib
import os
from collections import Counter
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make
# beside it are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytest_plugins = ["tests.support.fixtures"]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def pytest_collection_modifyitems(items):
    _unique_ids(items)
    _long_files_first(items)


def _unique_ids(items):
    """Every test its own node id. schemathesis 4.32 on pytest 9.2 gives the items of one
    `@schema.parametrize()` test (one per API operation) the same id, and pytest-xdist runs one
    test per id: under `make test` one operation of ten was fuzzed, silently. Such an item gets
    its name (`test…[POST /chat/completions]`) as its id; any id still shared stops the run."""
    from _pytest.nodeid import NodeId

    shared = Counter(item.nodeid for item in items)
    for item in items:
        if shared[item.nodeid] > 1 and item.name != getattr(item, "originalname", item.name):
            item._id = NodeId.parse(f"{item.parent.nodeid}::{item.name}")
    if still := sorted(n for n, count in Counter(i.nodeid for i in items).items() if count > 1):
        raise pytest.UsageError(f"These node ids are shared by several tests: {still}")


def _long_files_first(items):
    """The files with a slow or browser test (real processes: seconds to minutes each) run
    first, the rest after them in their usual order. `make test`'s pytest-xdist workers take
    files in this order (`--no-loadscope-reorder`), so the long ones start early and the many
    short ones fill the workers' ends, instead of a long file starting last and ending the run
    alone."""
    long_files = {item.path for item in items if item.get_closest_marker("slow")}
    long_files |= {item.path for item in items if item.get_closest_marker("browser")}
    items.sort(key=lambda item: item.path not in long_files)  # stable: same order within each


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """pytest-django's hook before it creates the test database: the data directory exists
    first. The settings only read it (`make run` creates the real one), and the suite writes
    there: SQLite's test database, and the logs and beat schedule of the processes it starts."""
    from django.conf import settings

    Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)
    # A second suite beside this one (another worktree's, on the same PostgreSQL) needs test
    # databases of its own: pytest-django's name (with `_gwN` in a pytest-xdist worker) would
    # be the same.
    if suffix := os.environ.get("MLX_PORTAL_TEST_DB_SUFFIX"):
        db = settings.DATABASES["default"]
        test = db.setdefault("TEST", {})
        test["NAME"] = f"{test.get('NAME') or 'test_' + db['NAME']}_{suffix}"


@pytest.fixture(autouse=True)
def _fresh_sharing_counts():
    """Every test starts with no request counted and no queue (servers/sharing: Redis)."""
    import redis

    from servers.sharing import admission

    with contextlib.suppress(redis.RedisError):  # a test without Redis counts nothing either
        admission.forget_everything()


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """A real Celery worker process consuming the default and this host's queues."""
    from tests.support.workers import new_worker

    worker = new_worker(tmp_path).start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


# Runs in every document before its own scripts, outside the page's Content-Security-Policy.
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => window.__portalCspViolation(
  `${e.effectiveDirective} refused ${e.blockedURI || "inline code"} (${e.sourceFile || ""}` +
  `:${e.lineNumber}) ${e.sample || ""}`));
"""


class WatchedBrowser:
    """The Playwright browser, whose every new context reports what the Content-Security-Policy
    refused — the `securitypolicyviolation` events and Chromium's console errors about it
    ("Refused to load …", "Executing inline event handler violates … Content Security Policy")
    — into `violations`, which `_no_csp_violations` checks after each browser test."""

    def __init__(self, browser) -> None:
        self._browser = browser
        self.violations: list[str] = []

    def new_context(self, **kwargs):
        context = self._browser.new_context(**kwargs)
        context.expose_binding(
            "__portalCspViolation",
            lambda source, text: self.violations.append(f"{source['frame'].url}: {text}"),
        )
        context.add_init_script(CSP_WATCH)
        context.on("console", self._console)
        return context

    def new_page(self, **kwargs):
        """A page in a watched context of its own, closed with the page (as Browser.new_page)."""
        context = self.new_context(**kwargs)
        page = context.new_page()
        page.on("close", lambda _: context.close())
        return page

    def _console(self, message) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused to" in text):
            self.violations.append(f"{message.location.get('url', '')}: {message.text}")

    def __getattr__(self, name):
        return getattr(self._browser, name)


@pytest.fixture(autouse=True)
def _no_csp_violations(request):
    """A test that drives the browser fails (at teardown) if any page it opened broke the
    Content-Security-Policy: a script, style or handler the policy refused is a part of the
    page that does not work."""
    if "browser" not in request.fixturenames:
        yield
        return
    watched = request.getfixturevalue("browser")
    watched.violations.clear()
    yield
    if watched.violations:
        found = "\n".join(dict.fromkeys(watched.violations))
        if "eval" in found:
            found += (
                "\n(wait_for_function takes a function, '() => …': an expression is evaluated "
                "again with eval at each poll, which the policy refuses)"
            )
        pytest.fail(f"Content-Security-Policy violations:\n{found}", pytrace=False)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (never a downloaded browser), watched for
    Content-Security-Policy violations (`WatchedBrowser`)."""
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.fail(f"Chromium not found at {executable}: run `make test` (it installs it).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        yield WatchedBrowser(browser)
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def member_page(page, live_server, member):
    """The browser page, logged in as the approved `member` (a forced login's cookie)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(member)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    return page


@pytest.fixture
def screenshot(page):
    """`screenshot("name")` saves docs/screenshots/name.png for the README."""

    def take(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """The live server serves static files through Django's finders, which know the plain
    names only; `make run` keeps the hashed, compressed storage."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def make_user(db, django_user_model):
    """`make_user("a@example.com", status="approved", staff=False)` creates a portal user."""

    def make(email: str, status: str = "approved", staff: bool = False):
        return django_user_model.objects.create_user(
            username=email.split("@")[0],
            email=email,
            password=PASSWORD,
            status=status,
            is_staff=staff,
            is_superuser=staff,
        )

    return make


@pytest.fixture
def member(make_user):
    """An approved, non-admin member."""
    return make_user("member@example.com")


@pytest.fixture
def admin_member(make_user):
    """An approved admin (staff + superuser)."""
    return make_user("admin@example.com", staff=True)


@pytest.fixture
def member_client(client, member):
    client.force_login(member)
    return client


@pytest.fixture
def admin_client(client, admin_member):
    client.force_login(admin_member)
    return client


@pytest.fixture(scope="session")
def oidc_provider(live_server):
    """A real OpenID Connect provider (`oidc-provider` from npm, tests/support/oidc_provider.py)
    with the portal as its client, for the test client (http://testserver) and the browser
    (the live server)."""
    from tests.support.oidc_provider import start_oidc_provider

    callback = "/accounts/oidc/corp/login/callback/"
    provider = start_oidc_provider([f"http://testserver{callback}", f"{live_server.url}{callback}"])
    yield provider
    provider.stop()


@pytest.fixture
def sso(settings, oidc_provider):
    """Single sign-on configured as MLX_PORTAL_OIDC_PROVIDERS=corp would: the provider `corp`
    ("Sign in with Corp SSO") at `oidc_provider`; no approval rule, no groups from the claim.
    Tests set `settings.OIDC_*` for the rules and `oidc_provider.set_accounts` for the people."""
    from django.core.cache import cache

    app = {
        "provider_id": "corp",
        "name": "Sign in with Corp SSO",
        "client_id": oidc_provider.client_id,
        "secret": oidc_provider.client_secret,
        "settings": {"server_url": oidc_provider.issuer, "scope": ["openid", "profile", "email"]},
    }
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {**settings.SOCIALACCOUNT_PROVIDERS["openid_connect"], "APPS": [app]}
    }
    # What config/settings.py adds for a configured issuer: its origin may receive the form.
    form_action = [*settings.SECURE_CSP["form-action"], oidc_provider.issuer]
    settings.SECURE_CSP = {**settings.SECURE_CSP, "form-action": form_action}
    settings.OIDC_APPROVE_DOMAINS, settings.OIDC_APPROVE_VALUES = [], []
    settings.OIDC_CLAIM, settings.OIDC_GROUPS_FROM_CLAIM = "", False
    oidc_provider.set_accounts({})
    cache.clear()  # allauth's rate limits and used ID tokens (jti)
    return oidc_provider
