"""Swagger UI at /docs/: every asset it loads comes from this process, it runs under a strict CSP in a real
browser, and the asset routes (mailer/assets.py) answer bad paths with a 404 that is logged as one."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from mailer.api.docs import DOCS_CSP
from mailer.app import create_app
from mailer.assets import add_package_assets, resolve_asset
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, IN_CI, JWT_SECRET, AiohttpClient

EXPECTED_TYPES = {
    ".js": ("text/javascript",),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".html": ("text/html",),
}
CHROMIUM = os.environ.get("MAILER_TEST_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# Swagger UI 5 fetches the document and renders the operations in well under a second; a loaded CI machine
# with six test runs on two cores needs far more.
BROWSER_TIMEOUT_MS = 30_000


class AssetLinks(HTMLParser):
    """Collects every URL the page makes the browser fetch (scripts, stylesheets, icons, images)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name) and tag in ("script", "link", "img", "iframe"):
                self.urls.append(str(values[name]))
        self._in_script_without_src = tag == "script" and not values.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script_without_src = False


@pytest.fixture
async def docs_client(aiohttp_client: AiohttpClient, tmp_path: Path) -> TestClient[Any, Any]:
    """The app on SQLite: the documentation touches no database, so one kind is enough."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'mailer.db'}",
        admin_password=ADMIN_PASSWORD,
        jwt_secret=JWT_SECRET,
        log_format="json",
    )
    return await aiohttp_client(create_app(settings, with_engine=False))


async def _page(client: TestClient[Any, Any]) -> AssetLinks:
    resp = await client.get("/docs/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    parser = AssetLinks()
    parser.feed(await resp.text())
    parser.urls = [urljoin("/docs/", url) for url in parser.urls]
    return parser


async def test_docs_page_loads_only_local_assets_and_each_answers(docs_client: TestClient[Any, Any]) -> None:
    page = await _page(docs_client)
    assert any(url.endswith("swagger-ui-bundle.js") for url in page.urls)
    assert any(url.endswith(".css") for url in page.urls)
    for url in page.urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"external asset {url}"
        assert not parts.netloc, f"external asset {url}"
        resp = await docs_client.get(url)
        assert resp.status == 200, url
        suffix = "." + url.rsplit(".", 1)[-1]
        assert resp.content_type in EXPECTED_TYPES[suffix], (url, resp.content_type)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"].startswith("public, max-age=")
        assert len(await resp.read()) > 0, url


async def test_swagger_ui_is_version_5(docs_client: TestClient[Any, Any]) -> None:
    # Swagger UI 4 cannot read OpenAPI 3.1, which is what /openapi.json is.
    bundle = await (await docs_client.get("/docs/static/swagger-ui-bundle.js")).text()
    found = re.search(r'PACKAGE_VERSION:"(\d+)\.', bundle)
    assert found is not None
    assert int(found.group(1)) >= 5


async def test_docs_page_has_no_inline_script_and_a_strict_csp(docs_client: TestClient[Any, Any]) -> None:
    resp = await docs_client.get("/docs/")
    csp = resp.headers["Content-Security-Policy"]
    assert csp == DOCS_CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert resp.headers["X-Frame-Options"] == "DENY"
    # script-src 'self' forbids inline scripts: the page must have none, or Swagger UI would never start.
    assert (await _page(docs_client)).inline_scripts == 0


async def test_init_script_points_at_our_document_and_keeps_no_token(
    docs_client: TestClient[Any, Any],
) -> None:
    [init] = [url for url in (await _page(docs_client)).urls if url.endswith("swagger-init.js")]
    script = await (await docs_client.get(init)).text()
    assert "http://" not in script
    assert "https://" not in script
    assert '"../openapi.json"' in script
    # Without this Swagger UI asks validator.swagger.io for a badge: an external request.
    assert "validatorUrl: null" in script
    # persistAuthorization would write the bearer token to localStorage.
    assert "persistAuthorization: true" not in script
    assert '"static/oauth2-redirect.html"' in script
    resp = await docs_client.get(urljoin(init, "../static/oauth2-redirect.html"))
    assert resp.status == 200
    assert resp.content_type == "text/html"


async def test_relative_urls_in_the_script_resolve_to_served_routes(
    docs_client: TestClient[Any, Any],
) -> None:
    # The script resolves its URLs against the page (/docs/), not against its own location.
    spec = await docs_client.get(urljoin("/docs/", "../openapi.json"))
    assert spec.status == 200
    flow = (await spec.json())["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    token = await docs_client.post(
        flow["tokenUrl"],
        data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD},
    )
    assert token.status == 200
    assert (await token.json())["token_type"] == "bearer"


async def test_docs_without_slash_redirects(docs_client: TestClient[Any, Any]) -> None:
    resp = await docs_client.get("/docs", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "/docs/"


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"chromium is required in CI and is not at {CHROMIUM}")
        pytest.skip(f"no chromium at {CHROMIUM}")
    return CHROMIUM


async def test_swagger_ui_signs_in_and_runs_a_request_in_chromium_under_its_csp(
    docs_client: TestClient[Any, Any], chromium: str
) -> None:
    from playwright.async_api import async_playwright

    violations: list[str] = []
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.on(
                "console",
                lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
            )
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            await page.goto(str(docs_client.make_url("/docs/")))
            # An operation block exists only once Swagger UI ran and rendered /openapi.json.
            await page.wait_for_selector(".opblock")
            title = await page.text_content(".info .title")
            # Authorize with the OAuth2 password flow, as a person would.
            await page.click("button.authorize")
            await page.fill("#oauth_username", "admin")
            await page.fill("#oauth_password", ADMIN_PASSWORD)
            await page.get_by_role("button", name="Apply given OAuth2 credentials").click()
            await page.get_by_role("button", name="Remove authorization").wait_for()
            await page.click("button.btn-done >> nth=0")
            # Then run GET /api/customers/ from the page: the token must go out, the answer come back.
            operation = page.locator(".opblock-get", has_text="/api/customers/").first
            await operation.locator(".opblock-summary").click()
            await operation.locator("button.try-out__btn").click()
            await operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tr.response .response-col_status").first
            await status.wait_for()
            answered = await status.text_content()
            stored = await page.evaluate("JSON.stringify(window.localStorage)")
        finally:
            await browser.close()
    assert title is not None
    assert "mailer" in title
    assert (answered or "").strip() == "200"
    assert violations == []
    assert errors == []
    # No persistAuthorization: the token is in the page's memory only.
    assert "eyJ" not in stored
    assert "authorized" not in stored


# --- mailer/assets.py on its own -------------------------------------------------------------------------


@pytest.fixture
def asset_dir(tmp_path: Path) -> Path:
    root = tmp_path / "assets"
    (root / "sub").mkdir(parents=True)
    (root / "app.js").write_text("console.log(1);\n")
    (root / "sub" / "style.css").write_text("body{}\n")
    (root / "sub" / "blob.bin").write_bytes(b"\x00\x01")
    (root / ".env").write_text("SECRET=1\n")
    (tmp_path / "outside.txt").write_text("not for you\n")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    return root


@pytest.fixture
async def asset_client(aiohttp_client: AiohttpClient, asset_dir: Path) -> TestClient[Any, Any]:
    from mailer.api import problems
    from mailer.observability.middleware import observability_middleware

    app = web.Application(middlewares=[observability_middleware, problems.problem_middleware])
    add_package_assets(app.router, "/assets", asset_dir, name="test-assets", max_age_s=60)
    return await aiohttp_client(app)


async def test_assets_serve_files_with_types_and_cache_headers(asset_client: TestClient[Any, Any]) -> None:
    js = await asset_client.get("/assets/app.js")
    assert js.status == 200
    assert js.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert js.headers["Cache-Control"] == "public, max-age=60"
    assert js.headers["X-Content-Type-Options"] == "nosniff"
    assert "ETag" in js.headers
    assert await js.text() == "console.log(1);\n"
    css = await asset_client.get("/assets/sub/style.css")
    assert css.headers["Content-Type"] == "text/css; charset=utf-8"
    unknown = await asset_client.get("/assets/sub/blob.bin")
    assert unknown.headers["Content-Type"] == "application/octet-stream"
    again = await asset_client.get("/assets/app.js", headers={"If-None-Match": js.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/assets/missing.js",
        "/assets/sub",
        "/assets/sub/",
        "/assets/.env",
        "/assets/escape.txt",
        "/assets/%2e%2e/outside.txt",
        "/assets/sub/%2e%2e/%2e%2e/outside.txt",
        "/assets/..%2foutside.txt",
        "/assets/sub%5c..%5c..%5coutside.txt",
        "/assets/app.js%00",
    ],
)
async def test_assets_answer_404_for_anything_but_a_file_inside(
    asset_client: TestClient[Any, Any], path: str
) -> None:
    resp = await asset_client.get(path)
    assert resp.status == 404, path
    assert resp.content_type == "application/problem+json"
    assert "not for you" not in await resp.text()


async def test_asset_404_is_counted_as_404(asset_client: TestClient[Any, Any]) -> None:
    # aiohttp's add_static answers a missing file from inside FileResponse.prepare, after middleware has seen
    # status 200; ours must count what the client got.
    labels = {"method": "GET", "route": "/assets/{path}", "status": "404"}
    before = REGISTRY.get_sample_value("mailer_http_requests_total", labels) or 0.0
    assert (await asset_client.get("/assets/nothing-here.js")).status == 404
    assert REGISTRY.get_sample_value("mailer_http_requests_total", labels) == before + 1


def test_resolve_asset_refuses_paths_out_of_the_root(asset_dir: Path) -> None:
    root = asset_dir.resolve()
    assert resolve_asset(root, "app.js") == root / "app.js"
    for bad in ("", "/etc/passwd", "../outside.txt", "sub/../../outside.txt", "escape.txt", ".env", "sub"):
        assert resolve_asset(root, bad) is None, bad


def test_a_missing_asset_directory_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        add_package_assets(web.Application().router, "/x", tmp_path / "absent", name="x")
