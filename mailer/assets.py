"""Serving a directory of front-end files: one registry package's assets, or one of our own static folders.

Swagger UI (from swagger-ui-py) and the admin UI both serve their files through `add_package_assets`, so
every asset gets the same headers and the same answers to bad paths. aiohttp's `add_static` is not used: it
returns a `FileResponse` that only finds out at send time that the file is missing, so middleware (our access
log and metrics) saw status 200 for what the client got as 404; here the file is looked up first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

# Package assets change only with an upgrade of the package, which restarts the service; an hour keeps a
# browser from asking again on every page load, and the ETag that FileResponse sends makes revalidation cheap.
DEFAULT_MAX_AGE_S: Final = 3600
# The types our front-ends ship, spelled out rather than guessed from the platform's mime.types, which
# differ between machines (".js" is "application/javascript" or "text/javascript", ".map" often unknown).
CONTENT_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".ico": "image/vnd.microsoft.icon",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".mjs": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
FALLBACK_CONTENT_TYPE: Final = "application/octet-stream"
# A package may ship HTML of its own (Swagger UI's oauth2-redirect.html, with inline script): served from our
# origin, such a page must neither run script nor be framed. Scripts and styles are not affected: a policy
# applies to the document it arrives with, not to a file that a page of ours loads.
ASSET_CSP: Final = "default-src 'none'; frame-ancestors 'none'; sandbox"


def content_type_for(path: Path) -> str:
    """The Content-Type header for a file, from its extension."""
    return CONTENT_TYPES.get(path.suffix.lower(), FALLBACK_CONTENT_TYPE)


def resolve_asset(root: Path, relative: str) -> Path | None:
    """The file `relative` names inside `root` (already resolved), or None for anything else.

    None for: a path that leaves `root` (`..`, an absolute path, a symlink pointing out), a directory (there
    is no listing), a hidden name (`.git`, `.env`), and bytes the file system cannot take (a NUL).
    """
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p.startswith(".") or "\\" in p for p in parts):
        return None
    try:
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, ValueError):
        return None
    return candidate


class _AssetHandler:
    def __init__(self, root: Path, max_age_s: int) -> None:
        self._root = root
        self._cache_control = f"public, max-age={max_age_s}"

    async def handle(self, request: web.Request) -> web.FileResponse:
        path = resolve_asset(self._root, request.match_info["path"])
        if path is None:
            # Raised, so the problem middleware answers problem+json and the access log counts a 404.
            raise web.HTTPNotFound(text="no such file")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type_for(path),
                "Cache-Control": self._cache_control,
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": ASSET_CSP,
                "X-Frame-Options": "DENY",
            },
        )


def add_package_assets(
    router: web.UrlDispatcher,
    prefix: str,
    directory: Path,
    *,
    name: str,
    max_age_s: int = DEFAULT_MAX_AGE_S,
) -> None:
    """Serve the files under `directory` at `{prefix}/{path}` (GET and HEAD), by route name `name`.

    `prefix` has no trailing slash (`/docs/static`). The directory must exist now: a package without its
    assets is a broken install, better found at start than on the first page view.
    """
    root = directory.resolve(strict=True)
    if not root.is_dir():
        raise NotADirectoryError(root)
    handler = _AssetHandler(root, max_age_s)
    router.add_get(prefix.rstrip("/") + "/{path:.+}", handler.handle, name=name)
