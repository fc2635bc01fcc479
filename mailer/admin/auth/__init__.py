"""Sign-in to the admin UI: OpenID Connect (code flow with PKCE) or the bootstrap administrator's password.

Sessions live in encrypted cookies; every state-changing request carries the session's CSRF token.
"""

from mailer.admin.auth.middleware import auth_context, csrf_token, current_user
from mailer.admin.auth.user import AdminUser
from mailer.admin.auth.wiring import setup_auth

__all__ = ["AdminUser", "auth_context", "csrf_token", "current_user", "setup_auth"]
