"""``GET /api/stats``: the anonymous statistics (advisor/ops only).

JSON by default: the aggregates (``count``, ``per_day``, ``duration_s``, ``clients``,
``features`` …) and ``rows`` (see ``gateway/stats.py`` and
``docs/privacy.md``). ``?format=csv`` or ``Accept: text/csv`` gives the rows as CSV
(RFC 4180) for a spreadsheet. ``?from=YYYY-MM-DD`` and ``?to=YYYY-MM-DD`` (exclusive,
UTC) narrow the range.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import hdrs, web

from gateway.stats import aggregate, to_csv
from web.auth import gateway_of, require_advisor
from web.problems import ProblemError

routes = web.RouteTableDef()


def _day(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ProblemError(400, f"'{name}' must be a date (YYYY-MM-DD).") from None
    return day.isoformat() + "T00:00Z"


def _wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format", "").lower()
    if fmt:
        if fmt not in ("csv", "json"):
            raise ProblemError(400, "'format' must be json or csv.")
        return fmt == "csv"
    accept = request.headers.get(hdrs.ACCEPT, "")
    return "text/csv" in accept and "application/json" not in accept


@routes.get("/api/stats", allow_head=False)
async def stats(request: web.Request) -> web.Response:
    require_advisor(request)
    statistics = gateway_of(request).statistics
    if statistics is None:
        raise ProblemError(503, "Statistics are not enabled on this gateway.")
    rows = await statistics.rows(_day(request, "from"), _day(request, "to"))
    if _wants_csv(request):
        return web.Response(
            text=to_csv(rows),
            content_type="text/csv",
            charset="utf-8",
            headers={
                hdrs.CONTENT_DISPOSITION: 'attachment; filename="videoberatung-statistik.csv"'
            },
        )
    return web.json_response({**aggregate(rows), "rows": [row.describe() for row in rows]})


def setup(app: web.Application) -> None:
    app.add_routes(routes)
