"""The customers resource: `/api/customers/` (create, list) and `/api/customers/{id}` (read, replace, change,
delete)."""

from __future__ import annotations

from typing import Annotated

import structlog
from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r201, r204, r404, r409, r422
from pydantic import AfterValidator, BeforeValidator, Field

from mailer.api.schemas.common import DEFAULT_PAGE_SIZE, AfterId, PageLimit, Problem, ResourceId
from mailer.api.schemas.customers import Customer, CustomerIn, CustomerPage, CustomerPatch
from mailer.api.views import ApiView, json_model
from mailer.domain.customers import TAG_MAX_CHARS, check_text, normalize_phone
from mailer.domain.statuses import MessageStatus
from mailer.observability import metrics
from mailer.store import customers as store

COLLECTION_PATH = "/api/customers/"
# [0-9]+ keeps /api/customers/import (registered by mailer.api.imports) out of the item route.
ITEM_PATH = "/api/customers/{id:[0-9]+}"

TagQuery = Annotated[str, Field(max_length=TAG_MAX_CHARS), AfterValidator(check_text)]
OperatorCodeQuery = Annotated[str, Field(pattern=r"^[0-9]{3}$")]
PhoneQuery = Annotated[str, BeforeValidator(normalize_phone)]


class CustomerCollectionView(ApiView):
    """`/api/customers/`: create a customer, list customers."""

    async def post(self, body: CustomerIn) -> r201[Customer] | r409[Problem] | r422[Problem]:
        """Create a customer.

        Only `phone` is required: `operator_code` defaults to the phone's digits 2-4, `tag` to null and
        `timezone` to UTC. The phone may be sent as a string or an integer and is returned as a string.

        Tags: customers
        Status Codes:
            201: the customer, as stored
            409: another customer has this phone
            422: a field is not valid (see `errors`)
        """
        row = await store.create(self.db, body.to_fields())
        # The id exists only now: the request's own log line carries it too.
        structlog.contextvars.bind_contextvars(customer_id=row["id"])
        return json_model(Customer.model_validate(row), 201)

    async def get(
        self,
        limit: PageLimit = DEFAULT_PAGE_SIZE,
        after: AfterId | None = None,
        tag: TagQuery | None = None,
        operator_code: OperatorCodeQuery | None = None,
        phone: PhoneQuery | None = None,
    ) -> r200[CustomerPage] | r422[Problem]:
        """List customers in id order, a page at a time.

        Pass the page's `next_after` as `after` to get the next page; it is null on the last one. The filters
        `tag`, `operator_code` and `phone` match exactly and combine with AND.

        Tags: customers
        Status Codes:
            200: one page of customers
            422: a query parameter is not valid
        """
        rows, next_after = await store.list_page(
            self.read_db, limit=limit, after=after, tag=tag, operator_code=operator_code, phone=phone
        )
        page = CustomerPage(items=[Customer.model_validate(r) for r in rows], next_after=next_after)
        return json_model(page)


class CustomerItemView(ApiView):
    """`/api/customers/{id}`: read, replace, change or delete one customer."""

    async def get(self, id: ResourceId, /) -> r200[Customer] | r404[Problem]:
        """Read a customer.

        Tags: customers
        Status Codes:
            200: the customer
            404: no customer has this id
        """
        return json_model(Customer.model_validate(await store.get(self.read_db, id)))

    async def put(
        self, id: ResourceId, /, body: CustomerIn
    ) -> r200[Customer] | r404[Problem] | r409[Problem] | r422[Problem]:
        """Replace a customer.

        The body follows the rules of create, defaults included: a field left out takes its default,
        not its current value (use PATCH to change some fields only).

        Tags: customers
        Status Codes:
            200: the customer, as stored
            404: no customer has this id
            409: another customer has this phone
            422: a field is not valid
        """
        row = await store.replace(self.db, id, body.to_fields())
        return json_model(Customer.model_validate(row))

    async def patch(
        self, id: ResourceId, /, body: CustomerPatch
    ) -> r200[Customer] | r404[Problem] | r409[Problem] | r422[Problem]:
        """Change some fields of a customer.

        Fields left out keep their values; `tag` may be set to null, the others may not. When `phone`
        changes and `operator_code` is not given, the operator code follows the new phone (its digits 2-4);
        sending the current phone again keeps the current code.

        Tags: customers
        Status Codes:
            200: the customer, as stored
            404: no customer has this id
            409: another customer has this phone
            422: a field is not valid
        """
        row = await store.patch(self.db, id, body.changes())
        return json_model(Customer.model_validate(row))

    async def delete(self, id: ResourceId, /) -> r204 | r404[Problem]:
        """Delete a customer.

        In one transaction its pending messages become `cancelled` and the customer is removed. Its
        messages stay, with `customer_id` null, so the history of what was sent is kept.

        Tags: customers
        Status Codes:
            204: deleted
            404: no customer has this id
        """
        metrics.message_transition(MessageStatus.CANCELLED, await store.delete_one(self.db, id))
        return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view(COLLECTION_PATH, CustomerCollectionView)
    router.add_view(COLLECTION_PATH.rstrip("/"), CustomerCollectionView)
    router.add_view(ITEM_PATH, CustomerItemView)
