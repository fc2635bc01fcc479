"""The customers resource: `/api/customers/` (create, list) and `/api/customers/{id}` (read, replace, change,
delete)."""

from __future__ import annotations

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r201, r204, r404, r409, r422

from mailer.api.views import ApiView, json_model
from mailer.operations import customers as operations
from mailer.schemas.common import DEFAULT_PAGE_SIZE, AfterId, PageLimit, Problem, ResourceId
from mailer.schemas.customers import (
    Customer,
    CustomerIn,
    CustomerPage,
    CustomerPatch,
    OperatorCodeQuery,
    PhoneQuery,
    TagQuery,
)
from mailer.store import customers as store

COLLECTION_PATH = "/api/customers/"
# [0-9]+ keeps /api/customers/import (registered by mailer.api.imports) out of the item route.
ITEM_PATH = "/api/customers/{id:[0-9]+}"


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
        row = await operations.create(self.db, body.to_fields())
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

    reads_by_id = True

    async def get(self, id: ResourceId, /) -> r200[Customer] | r404[Problem]:
        """Read a customer.

        Tags: customers
        Status Codes:
            200: the customer
            404: no customer has this id
        """
        return await self.read_by_id(id)

    async def read_by_id(self, resource_id: int) -> web.Response:
        return json_model(Customer.model_validate(await store.get(self.read_db, resource_id)))

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
        row = await operations.replace(self.db, id, body.to_fields())
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
        row = await operations.patch(self.db, id, body.changes())
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
        await operations.delete(self.db, id)
        return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view(COLLECTION_PATH, CustomerCollectionView)
    router.add_view(COLLECTION_PATH.rstrip("/"), CustomerCollectionView)
    router.add_view(ITEM_PATH, CustomerItemView)
