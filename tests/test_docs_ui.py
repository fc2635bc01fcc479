"""Swagger UI at /docs/: every asset it loads comes from this process, and the OAuth2 flow is wired up."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_PASSWORD

EXPECTED_TYPES = {
    ".js": ("application/javascript", "text/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".html": ("text/html",),
}


class AssetLinks(HTMLParser):
    """Collects every URL the page makes the browser fetch (scripts, stylesheets, icons, images)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name) and tag in ("script", "link", "img", "iframe"):
                self.urls.append(str(values[name]))


async def _asset_urls(client: TestClient[Any, Any]) -> list[str]:
    resp = await client.get("/docs/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    parser = AssetLinks()
    parser.feed(await resp.text())
    return [urljoin("/docs/", url) for url in parser.urls]


async def test_docs_page_loads_only_local_assets_and_each_answers(client: TestClient[Any, Any]) -> None:
    urls = await _asset_urls(client)
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls)
    assert any(url.endswith(".css") for url in urls)
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"external asset {url}"
        assert not parts.netloc, f"external asset {url}"
        resp = await client.get(url)
        assert resp.status == 200, url
        suffix = "." + url.rsplit(".", 1)[-1]
        assert resp.content_type in EXPECTED_TYPES[suffix], (url, resp.content_type)
        assert len(await resp.read()) > 0, url


async def test_init_script_points_at_our_document_and_oauth2_redirect(client: TestClient[Any, Any]) -> None:
    [init] = [url for url in await _asset_urls(client) if url.endswith("swagger-init.js")]
    script = await (await client.get(init)).text()
    assert "http://" not in script
    assert "https://" not in script
    assert '"../openapi.json"' in script
    # Without this Swagger UI asks validator.swagger.io for a badge: an external request.
    assert "validatorUrl: null" in script
    assert "persistAuthorization: true" in script
    redirect = urljoin(init, "../static/oauth2-redirect.html")
    assert '"static/oauth2-redirect.html"' in script
    resp = await client.get(redirect)
    assert resp.status == 200
    assert resp.content_type == "text/html"


async def test_relative_urls_in_the_script_resolve_to_served_routes(client: TestClient[Any, Any]) -> None:
    # The script resolves its URLs against the page (/docs/), not against its own location.
    spec = await client.get(urljoin("/docs/", "../openapi.json"))
    assert spec.status == 200
    flow = (await spec.json())["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    token = await client.post(
        flow["tokenUrl"],
        data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD},
    )
    assert token.status == 200
    assert (await token.json())["token_type"] == "bearer"


async def test_docs_without_slash_redirects(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/docs", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "/docs/"
