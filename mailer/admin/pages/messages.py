"""One message with every provider request made for it."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from mailer.admin.pages import common
from mailer.store import messages as store


async def detail(request: web.Request) -> web.Response:
    message_id = common.positive_int(request.match_info["id"])
    if message_id is None:
        raise web.HTTPNotFound(text="no such message")
    found = await store.get_with_attempts(common.read_db(request), message_id)
    context = {"message": found.message, "attempts": found.attempts}
    return aiohttp_jinja2.render_template("message.html", request, context)
