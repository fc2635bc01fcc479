"""Messages: a mailout's messages, adding one customer to a mailout, one message with its attempts."""

from __future__ import annotations

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r201, r400, r404, r409, r422

from mailer.api.mailouts import ITEM as MAILOUT_ITEM
from mailer.api.views import ApiView, json_model
from mailer.domain.statuses import MessageStatus
from mailer.operations import mailouts as operations
from mailer.schemas.common import DEFAULT_PAGE_SIZE, AfterId, PageLimit, Problem, ResourceId
from mailer.schemas.messages import AttemptOut, MessageCreate, MessageDetail, MessageOut, MessagePage
from mailer.store import messages as store

MESSAGE_ITEM = r"/api/messages/{id:\d+}"


class MailoutMessagesView(ApiView):
    """The messages of one mailout."""

    async def get(
        self,
        id: ResourceId,
        /,
        limit: PageLimit = DEFAULT_PAGE_SIZE,
        after: AfterId = 0,
        status: MessageStatus | None = None,
    ) -> r200[MessagePage] | r404[Problem] | r422[Problem]:
        """List a mailout's messages.

        Messages in id order, optionally only those in one `status`; pagination as in every list.

        Tags: messages
        """
        page = await store.list_page(self.read_db, id, status, limit, after)
        items = [MessageOut.model_validate(dict(row)) for row in page.items]
        return json_model(MessagePage(items=items, next_after=page.next_after))

    async def post(
        self, id: ResourceId, /, body: MessageCreate
    ) -> r201[MessageOut] | r400[Problem] | r404[Problem] | r409[Problem] | r422[Problem]:
        """Add a customer to a mailout.

        Creates one `pending` message for the customer, due when its send window first opens after the
        later of now and `start_at`. A mailout that finished early (every message final) and whose end
        has not come is `running` again. 404 for an unknown mailout or customer; 409 when the mailout is
        cancelled or past its end, or already has a message for that customer.

        Tags: messages
        """
        row = await operations.add_message(self.db, self.engine, id, body.customer_id)
        return json_model(MessageOut.model_validate(dict(row)), 201)


class MessageView(ApiView):
    """One message."""

    async def get(self, id: ResourceId, /) -> r200[MessageDetail] | r404[Problem]:
        """Read a message with its attempts.

        The message, with `attempts_log`: every provider request made for it, oldest first (start time,
        duration, outcome, HTTP status, error). `attempts` stays the number of requests.

        Tags: messages
        """
        found = await store.get_with_attempts(self.read_db, id)
        log = [AttemptOut.model_validate(dict(row)) for row in found.attempts]
        return json_model(MessageDetail.model_validate({**found.message, "attempts_log": log}))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view(MAILOUT_ITEM + "/messages", MailoutMessagesView)
    router.add_view(MESSAGE_ITEM, MessageView)
