"""`POST /api/audience/count`: how many customers a mailout with this filter would reach, and how many of them
are inside its send window now."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r422
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from mailer.api.views import ApiView, json_model
from mailer.domain.mailouts import AudienceFilter
from mailer.operations import audience as operations
from mailer.schemas.common import Problem, StrictModel
from mailer.schemas.mailouts import MailoutFilter, SendWindowBody

PATH = "/api/audience/count"


def _empty_object_is_none(value: Any) -> Any:
    # As in a mailout: `{}` means "no window", like null.
    return None if value == {} else value


class AudienceQuery(StrictModel):
    """A mailout's `filter` and `send_window`, as in create."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"filter": {"operator_codes": ["912"], "tags": ["vip"]}, "send_window": None}]
        }
    )

    filter: MailoutFilter | None = None
    send_window: Annotated[SendWindowBody | None, BeforeValidator(_empty_object_is_none)] = None


class AudienceCountOut(BaseModel):
    count: int = Field(description="customers the filter matches now", examples=[1200])
    in_window_now: int = Field(
        description="of those, how many are inside the send window at this moment (all of them without one)",
        examples=[800],
    )


class AudienceCountView(ApiView):
    """`POST /api/audience/count`."""

    async def post(self, body: AudienceQuery) -> r200[AudienceCountOut] | r422[Problem]:
        """Count a would-be mailout's audience.

        How many customers a mailout with this `filter` would reach if it started now, and how many of them
        are inside `send_window` at this moment in their own time zone. One count query grouped by time
        zone; the window is checked once per zone.

        Tags: mailouts
        """
        audience = body.filter.to_domain() if body.filter is not None else AudienceFilter()
        window = body.send_window.to_domain() if body.send_window is not None else None
        result = await operations.count(self.read_db, audience, window)
        return json_model(AudienceCountOut(count=result.count, in_window_now=result.in_window_now))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view(PATH, AudienceCountView)
