"""/api/mailouts: create, read, list, change, delete; cancel, pause, resume; statistics.

The views parse and answer; what each change does (the store call, the engine's wake-up, the log line)
is in `mailer.operations.mailouts`, shared with the admin UI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r201, r204, r400, r404, r409, r422

from mailer.api.views import ApiView, json_data, json_model
from mailer.domain import mailouts as domain
from mailer.domain.statuses import MailoutStatus, MessageStatus, Outcome
from mailer.domain.windows import format_window_time
from mailer.operations import mailouts as operations
from mailer.schemas.common import DEFAULT_PAGE_SIZE, AfterId, PageLimit, Problem, ResourceId, format_utc
from mailer.schemas.mailouts import (
    ByStatus,
    ErrorsByKind,
    MailoutCreate,
    MailoutOut,
    MailoutPage,
    MailoutPatch,
    MailoutStats,
    MailoutStatsItem,
    MailoutStatsPage,
)
from mailer.store import mailouts as store
from mailer.store import stats as stats_store

COLLECTION = "/api/mailouts/"
# Digits only, so that /api/mailouts/stats is never read as a mailout id.
ITEM = r"/api/mailouts/{id:\d+}"


def by_status(counts: dict[MessageStatus, int]) -> ByStatus:
    return ByStatus(**{status.value: count for status, count in counts.items()})


# The JSON of `MailoutOut` and `MailoutStats` built directly, for the two hot reads: the models validate
# every field of what they are given (each operator code and tag of the filter again), 30-45 us of a
# read's CPU for values that were validated when they were stored. The models stay the documented shapes,
# and tests/test_read_path.py holds both ways to the same bytes.
_BY_STATUS_KEYS = tuple(ByStatus.model_fields)
_ERROR_KINDS = tuple(ErrorsByKind.model_fields)


def mailout_data(mailout: domain.Mailout) -> dict[str, Any]:
    """What `MailoutOut.from_domain(mailout)` serialises to."""
    spec, window = mailout.spec, mailout.spec.window
    return {
        "id": mailout.id,
        "start_at": format_utc(spec.start_at),
        "end_at": format_utc(spec.end_at),
        "text": spec.text,
        "filter": {"operator_codes": list(spec.filter.operator_codes), "tags": list(spec.filter.tags)},
        "send_window": (
            None
            if window is None
            else {"start": format_window_time(window.start), "end": format_window_time(window.end)}
        ),
        "status": mailout.status.value,
        "created_at": format_utc(mailout.created_at),
        "updated_at": format_utc(mailout.updated_at),
    }


def _utc_or_null(value: datetime | None) -> str | None:
    return None if value is None else format_utc(value)


def stats_data(data: stats_store.MailoutStatsData) -> dict[str, Any]:
    """What the `MailoutStats` of `data` serialises to."""
    counts = data.counts.by_status
    return {
        "mailout": mailout_data(data.counts.mailout),
        "total": data.counts.total,
        "by_status": {key: counts.get(MessageStatus(key), 0) for key in _BY_STATUS_KEYS},
        "first_sent_at": _utc_or_null(data.first_sent_at),
        "last_sent_at": _utc_or_null(data.last_sent_at),
        "attempts": data.attempts,
        "errors_by_kind": {key: data.errors_by_kind.get(Outcome(key), 0) for key in _ERROR_KINDS},
    }


class MailoutCollectionView(ApiView):
    """The collection of mailouts."""

    async def get(
        self, limit: PageLimit = DEFAULT_PAGE_SIZE, after: AfterId = 0, status: MailoutStatus | None = None
    ) -> r200[MailoutPage] | r422[Problem]:
        """List mailouts.

        Mailouts in id order, optionally only those in one `status`. Keyset pagination: pass the answer's
        `next_after` as `after` for the next page; it is null on the last one.

        Tags: mailouts
        """
        page = await store.list_page(self.read_db, status, limit, after)
        items = [MailoutOut.from_domain(m) for m in page.items]
        return json_model(MailoutPage(items=items, next_after=page.next_after))

    async def post(self, body: MailoutCreate) -> r201[MailoutOut] | r400[Problem] | r422[Problem]:
        """Create a mailout.

        The new mailout is `scheduled`; it starts at once when `start_at <= now < end_at`, at `start_at`
        otherwise. `filter` omitted or null means every customer, `send_window` omitted or null any
        time of day. A mailout whose `end_at` has passed is accepted and finishes with nothing sent.

        Tags: mailouts
        """
        mailout = await operations.create(self.db, self.engine, body.to_domain())
        return json_model(MailoutOut.from_domain(mailout), 201)


class MailoutView(ApiView):
    """One mailout."""

    reads_by_id = True

    async def get(self, id: ResourceId, /) -> r200[MailoutOut] | r404[Problem]:
        """Read a mailout.

        Tags: mailouts
        """
        return await self.read_by_id(id)

    async def read_by_id(self, resource_id: int) -> web.Response:
        return json_data(mailout_data(await store.get(self.read_db, resource_id)))

    async def put(
        self, id: ResourceId, /, body: MailoutCreate
    ) -> r200[MailoutOut] | r400[Problem] | r404[Problem] | r409[Problem] | r422[Problem]:
        """Replace a mailout.

        Every field is replaced; omitted `filter` and `send_window` become "everyone" and "any time".
        A scheduled mailout may change anything. A running or paused one may change `text`, `end_at` and
        `send_window` (they apply to the messages not yet sent); a different `filter` or `start_at` is 409,
        repeating the current ones is fine. A finished or cancelled mailout cannot change (409).

        Tags: mailouts
        """
        spec = body.to_domain()
        return await self._change(id, lambda _current: spec)

    async def patch(
        self, id: ResourceId, /, body: MailoutPatch
    ) -> r200[MailoutOut] | r400[Problem] | r404[Problem] | r409[Problem] | r422[Problem]:
        """Change some fields of a mailout.

        Only the fields given change; `filter` replaces the whole filter, and `filter` or `send_window` set
        to null or `{}` removes it. The rules by status are those of PUT, and `start_at < end_at` must
        still hold afterwards (else 422 naming `end_at`).

        Tags: mailouts
        """
        return await self._change(id, body.apply)

    async def delete(self, id: ResourceId, /) -> r204[None] | r404[Problem]:
        """Delete a mailout.

        Sending stops first (requests in flight are cut); then the mailout goes, with its messages and
        their attempts.

        Tags: mailouts
        """
        await operations.delete(self.db, self.engine, id)
        return web.Response(status=204)

    async def _change(self, mailout_id: int, edit: domain.SpecEdit) -> web.Response:
        mailout = await operations.change(self.db, self.engine, mailout_id, edit)
        return json_model(MailoutOut.from_domain(mailout))


class MailoutCancelView(ApiView):
    """Cancel a mailout."""

    async def post(self, id: ResourceId, /) -> r200[MailoutOut] | r404[Problem] | r409[Problem]:
        """Cancel a mailout.

        A scheduled, running or paused mailout becomes `cancelled` and its pending messages `cancelled`;
        requests in flight are cut and recorded. The record stays. Cancelling again answers the mailout
        unchanged; a finished mailout cannot be cancelled (409).

        Tags: mailouts
        """
        mailout = await operations.cancel(self.db, self.engine, id)
        return json_model(MailoutOut.from_domain(mailout))


class MailoutPauseView(ApiView):
    """Pause a mailout."""

    async def post(self, id: ResourceId, /) -> r200[MailoutOut] | r404[Problem] | r409[Problem]:
        """Pause a mailout.

        A running or scheduled mailout becomes `paused`: no new sends start (requests in flight finish).
        Its `end_at` still applies. Pausing again answers it unchanged; finished or cancelled is 409.

        Tags: mailouts
        """
        mailout = await operations.pause(self.db, self.engine, id)
        return json_model(MailoutOut.from_domain(mailout))


class MailoutResumeView(ApiView):
    """Resume a paused mailout."""

    async def post(self, id: ResourceId, /) -> r200[MailoutOut] | r404[Problem] | r409[Problem]:
        """Resume a mailout.

        A paused mailout goes on where it stopped: `running` if it had started, `scheduled` otherwise.
        A running or scheduled mailout is answered unchanged; finished or cancelled is 409.

        Tags: mailouts
        """
        mailout = await operations.resume(self.db, self.engine, id)
        return json_model(MailoutOut.from_domain(mailout))


class MailoutStatsListView(ApiView):
    """Statistics of every mailout."""

    async def get(
        self, limit: PageLimit = DEFAULT_PAGE_SIZE, after: AfterId = 0, status: MailoutStatus | None = None
    ) -> r200[MailoutStatsPage] | r422[Problem]:
        """Message counts of every mailout.

        Each mailout with `total` and `by_status` (all six message statuses, zeros included); filter and
        pagination as in the mailout list. Also at `/api/mailouts/status/stats`.

        Tags: mailouts, statistics
        """
        page = await stats_store.list_page(self.read_db, status, limit, after)
        items = [
            MailoutStatsItem(
                id=c.mailout.id,
                status=c.mailout.status,
                start_at=c.mailout.spec.start_at,
                end_at=c.mailout.spec.end_at,
                text=c.mailout.spec.text,
                total=c.total,
                by_status=by_status(c.by_status),
            )
            for c in page.items
        ]
        return json_model(MailoutStatsPage(items=items, next_after=page.next_after))


class MailoutStatsView(ApiView):
    """Statistics of one mailout."""

    reads_by_id = True

    async def get(self, id: ResourceId, /) -> r200[MailoutStats] | r404[Problem]:
        """Statistics of one mailout.

        Message counts (`total`, `by_status` with all six statuses), the first and last send, the number
        of provider requests (`attempts`) and the failed ones by kind (`errors_by_kind`, all kinds, zeros
        included). Also at `/api/mailouts/{id}/messages/stats`.

        Tags: mailouts, statistics
        """
        return await self.read_by_id(id)

    async def read_by_id(self, resource_id: int) -> web.Response:
        return json_data(stats_data(await stats_store.for_mailout(self.read_db, resource_id)))


def add_routes(router: web.UrlDispatcher) -> None:
    # The fixed paths first: they must win over anything with a parameter.
    router.add_view("/api/mailouts/stats", MailoutStatsListView)
    router.add_view("/api/mailouts/status/stats", MailoutStatsListView)
    router.add_view(COLLECTION, MailoutCollectionView)
    router.add_view(ITEM, MailoutView)
    router.add_view(ITEM + "/cancel", MailoutCancelView)
    router.add_view(ITEM + "/pause", MailoutPauseView)
    router.add_view(ITEM + "/resume", MailoutResumeView)
    router.add_view(ITEM + "/stats", MailoutStatsView)
    router.add_view(ITEM + "/messages/stats", MailoutStatsView)
