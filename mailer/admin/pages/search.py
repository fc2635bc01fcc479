"""The header's search box: one query, results grouped by kind."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from mailer.admin.pages import common
from mailer.operations import search as operations

# Per kind: a search box is for finding one thing, not for listing thousands.
RESULTS_PER_KIND = 20


async def page(request: web.Request) -> web.Response:
    query = request.query.get("q", "")
    problem = operations.check_query(query)
    result = None
    if problem is None and query.strip():
        result = await operations.search(common.read_db(request), query, RESULTS_PER_KIND)
    context = {"q": query, "problem": problem, "result": result, "limit": RESULTS_PER_KIND}
    return aiohttp_jinja2.render_template("search.html", request, context, status=422 if problem else 200)
