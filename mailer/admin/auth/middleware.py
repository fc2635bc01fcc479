"""The admin UI's gate: a session for each page but the ways in, CSRF on each change, strict headers."""

from __future__ import annotations

import hmac
import json
import warnings
from http.cookies import SimpleCookie

import aiohttp_jinja2
import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from mailer.admin.auth.config import (
    AUTH_CONFIG,
    LOGIN_PATH,
    PUBLIC_PREFIXES,
    SESSION_SLOT,
    SessionSlot,
    is_public,
    redirect,
)
from mailer.admin.auth.session import Session
from mailer.admin.auth.user import AdminUser

log = structlog.get_logger(__name__)

COOKIE_NAME = "mailer_admin_session"
# The cookie goes only to the admin UI, not to /api/ (which takes bearer tokens and no cookies at all).
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
# Our pages send their forms as UTF-8 (or with no charset); a body in any other charset is decoded by the
# declared one, and an unknown name fails inside the decoder (LookupError), which used to be a 500.
FORM_CHARSETS = frozenset({"utf-8", "utf8"})
FRAGMENT_TYPE = "text/html-fragment"
PROBLEM_TYPE = "application/problem+json"
STATIC_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def content_security_policy(form_targets: str = "") -> str:
    """Our own files only: no inline script or style, no framing; forms may also go to the provider.

    `form-action` holds for the redirects a form submission leads to, so logout's redirect to the provider's
    end_session_endpoint needs the provider's origin there.
    """
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
        f"base-uri 'none'; frame-ancestors 'none'; form-action 'self'{form_targets}"
    )


def current_user(request: web.Request) -> AdminUser | None:
    """The signed-in operator, or None."""
    slot = request.get(SESSION_SLOT)
    session = slot.session if slot is not None else None
    return session.user if session is not None else None


def csrf_token(request: web.Request) -> str:
    """The token every form and state-changing request of this session must carry ("" without a session)."""
    slot = request.get(SESSION_SLOT)
    return slot.session.csrf_token if slot is not None and slot.session is not None else ""


def auth_context(request: web.Request) -> dict[str, object]:
    """What every template needs from the sign-in: `user` and `csrf_token`."""
    return {"user": current_user(request), "csrf_token": csrf_token(request)}


def wants_fragment(request: web.Request) -> bool:
    """A script's request (fetch, polling): it gets a status to act on, not a redirect to a page."""
    accept = request.headers.get(hdrs.ACCEPT, "")
    return (
        FRAGMENT_TYPE in accept
        or "X-Requested-With" in request.headers
        or ("application/json" in accept and "text/html" not in accept)
    )


def problem(status: int, title: str, detail: str) -> web.Response:
    """A problem+json answer for scripts (the API's own helper is not ours to import)."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "errors": []}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE)


def _put_in_template_context(request: web.Request) -> None:
    # aiohttp_jinja2 merges this request key into every template it renders. The key is that library's own
    # string, which aiohttp flags with NotAppKeyWarning (an error under our test settings); it is not ours to
    # change, so the warning is silenced for exactly this assignment.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        context = request.setdefault(aiohttp_jinja2.REQUEST_CONTEXT_KEY, {})
    context.update(auth_context(request))


async def _csrf_ok(request: web.Request, session: Session | None) -> bool:
    if session is None:
        return False
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        # The form is parsed once here; aiohttp keeps it, so the handler's own request.post() reads it again.
        field = (await request.post()).get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    # Constant time: how much of a guessed token matched must not show in the response time.
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf_token.encode())


def _forbidden_page(request: web.Request, message: str) -> web.Response:
    if wants_fragment(request):
        return problem(403, "Forbidden", message)
    return aiohttp_jinja2.render_template(
        "forbidden.html", request, {"message": message, **auth_context(request)}, status=403
    )


def _unsupported_charset(request: web.Request) -> web.Response:
    message = "This form was sent in a character set other than UTF-8. Reload the page and try again."
    if wants_fragment(request):
        return problem(415, "Unsupported Media Type", message)
    return aiohttp_jinja2.render_template(
        "error.html", request, {"status": 415, "message": message, **auth_context(request)}, status=415
    )


def _sign_in_required(request: web.Request) -> web.Response:
    if wants_fragment(request):
        return problem(401, "Unauthorized", "sign in to the admin UI first; the session may have expired")
    target = LOGIN_PATH
    if request.method in (hdrs.METH_GET, hdrs.METH_HEAD):
        target = str(URL(LOGIN_PATH).with_query(next=request.path_qs))
    return redirect(target, 303 if request.method not in SAFE_METHODS else 302)


@web.middleware
async def admin_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, CSRF and the acting user's log binding for every route of the admin sub-application."""
    config = request.config_dict[AUTH_CONFIG]
    slot = SessionSlot(config.codec.open(request.cookies.get(COOKIE_NAME)))
    request[SESSION_SLOT] = slot
    if slot.session is None and is_public(request.path) and request.method in SAFE_METHODS:
        # A first visit to the login page: an anonymous session to carry the form's CSRF token.
        slot.replace(Session.anonymous(config.codec.now()))
    if request.method not in SAFE_METHODS and (request.charset or "utf-8").lower() not in FORM_CHARSETS:
        return _unsupported_charset(request)
    if request.method not in SAFE_METHODS and not await _csrf_ok(request, slot.session):
        log.warning("admin request refused: no valid CSRF token", path=request.path, method=request.method)
        return _forbidden_page(
            request,
            "This form has expired or did not come from this site. Go back, reload the page, try again.",
        )
    user = current_user(request)
    if user is None and not is_public(request.path):
        return _sign_in_required(request)
    if user is not None:
        structlog.contextvars.bind_contextvars(user=user.subject, user_via=user.via)
    _put_in_template_context(request)
    return await handler(request)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers and the session cookie on every admin response, streamed ones and error pages included."""
    config = request.config_dict.get(AUTH_CONFIG)
    if config is None:
        return
    for name, value in STATIC_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", config.content_security_policy)
    if not request.path.startswith(PUBLIC_PREFIXES):
        # Pages show customers' phone numbers: no copy in any cache, the browser's back/forward one included.
        response.headers["Cache-Control"] = "no-store"
    slot = request.get(SESSION_SLOT)
    if slot is None or not slot.changed:
        return
    # aiohttp turns response.set_cookie() into headers before this signal runs, so the header is written here.
    cookie: SimpleCookie = SimpleCookie()
    if slot.session is None:
        cookie[COOKIE_NAME] = ""
        max_age = 0
    else:
        cookie[COOKIE_NAME] = config.codec.seal(slot.session)
        max_age = max(0, int(slot.session.expires_at - config.codec.now()))
    morsel = cookie[COOKIE_NAME]
    morsel["path"] = COOKIE_PATH
    morsel["max-age"] = str(max_age)
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if config.secure_cookies:
        morsel["secure"] = True
    response.headers.add(hdrs.SET_COOKIE, morsel.OutputString())
