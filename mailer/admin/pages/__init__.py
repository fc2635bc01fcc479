"""The admin UI's pages: one module per resource, thin handlers over `mailer.operations`."""

from __future__ import annotations

from aiohttp import web

from mailer.admin.pages import customers, dashboard, mailouts, messages, search

MAILOUT = r"/mailouts/{id:\d+}"
CUSTOMER = r"/customers/{id:\d+}"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", dashboard.page, name="dashboard")
    router.add_get("/live/dashboard", dashboard.live, name="dashboard-live")
    router.add_get("/search", search.page, name="search")

    router.add_get("/mailouts", mailouts.list_page, name="mailouts")
    router.add_get("/mailouts/new", mailouts.new_form, name="mailout-new")
    router.add_post("/mailouts/new", mailouts.create)
    router.add_post("/audience/count", mailouts.audience_count, name="audience-count")
    router.add_get(MAILOUT, mailouts.detail, name="mailout")
    router.add_get(MAILOUT + "/live", mailouts.live, name="mailout-live")
    router.add_get(MAILOUT + "/edit", mailouts.edit_form, name="mailout-edit")
    router.add_post(MAILOUT + "/edit", mailouts.edit)
    router.add_get(MAILOUT + "/messages.csv", mailouts.export, name="mailout-export")
    router.add_get(MAILOUT + "/{action:pause|resume|cancel|delete}", mailouts.confirm, name="mailout-action")
    router.add_post(MAILOUT + "/{action:pause|resume|cancel|delete}", mailouts.act)
    router.add_get(r"/messages/{id:\d+}", messages.detail, name="message")

    router.add_get("/customers", customers.list_page, name="customers")
    router.add_get("/customers/new", customers.new_form, name="customer-new")
    router.add_post("/customers/new", customers.create)
    router.add_get("/customers/import", customers.import_form, name="customer-upload")
    router.add_post("/customers/import", customers.import_file)
    router.add_get(CUSTOMER + "/edit", customers.edit_form, name="customer-edit")
    router.add_post(CUSTOMER + "/edit", customers.edit)
    router.add_get(CUSTOMER + "/delete", customers.confirm_delete, name="customer-delete")
    router.add_post(CUSTOMER + "/delete", customers.delete)
