"""The page at ``/``: the limits, where the busiest customers stand, the latest events, a chart.

For someone developing offline: one look tells what the ledger holds and
which customer is close to which limit.  Rendered on the server from the
same Tracker calls the API serves (plain HTML, an inline SVG chart, a few
lines of JavaScript that show times as "3 min ago"); nothing is fetched
from the network, so it works on a machine without one.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone

from starlette.requests import Request
from starlette.responses import HTMLResponse

from limitry_local.models import Event, Quota, QuotaStatus, RateLimit, RateLimitStatus, UsagePoint
from limitry_local.server.routes import tracker_of
from limitry_local.tracker import Tracker

BUSIEST = 5
"""Customers shown against the limits: the most tokens over :data:`BUSIEST_OVER`."""
BUSIEST_OVER = timedelta(days=7)
LATEST = 20
"""Events listed, newest first."""
CHART_HOURS = 24

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2430;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #d8dde4;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#eef1f5}.num{text-align:right}
.muted{color:#6b7480}.bar{background:#e6e9ee;width:120px;height:8px;border-radius:4px}
.fill{height:8px;border-radius:4px;background:#3b7dd8}.over .fill{background:#d8453b}
svg text{font-size:11px;fill:#6b7480}
"""

_SCRIPT = """
for (const el of document.querySelectorAll("time[datetime]")) {
  const seconds = Math.round((Date.now() - Date.parse(el.dateTime)) / 1000);
  const ago = seconds < 60 ? seconds + " s ago" : seconds < 3600
    ? Math.round(seconds / 60) + " min ago" : seconds < 86400
    ? Math.round(seconds / 3600) + " h ago" : Math.round(seconds / 86400) + " d ago";
  el.title = el.dateTime;
  el.textContent = seconds >= 0 ? ago : el.dateTime;
}
document.body.dataset.ready = "1";
"""


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(render(tracker_of(request)))


def render(tracker: Tracker) -> str:
    """The whole page, from the Tracker's limits, events and usage as of its clock."""
    now = datetime.fromtimestamp(tracker.engine.clock.source(), timezone.utc).replace(microsecond=0)
    sections = [
        "<h1>limitry-local</h1>",
        f'<p class="muted">As of {_iso(now)}. '
        "The API is under <code>/v1</code>; its OpenAPI document is "
        '<a href="/openapi.json">/openapi.json</a>.</p>',
        _limits(tracker),
        _busiest(tracker, now),
        _chart(tracker, now),
        _latest(tracker),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>limitry-local</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def _limits(tracker: Tracker) -> str:
    rows = []
    for limit in _all_rate_limits(tracker):
        state = "" if limit.enabled else ' <span class="muted">(disabled)</span>'
        rows.append(
            _row(
                "rate limit",
                limit.name + state,
                f"{limit.limit_value:,} per {limit.window}",
                _filters(limit.dimension_filters, limit.per),
                raw=True,
            )
        )
    for quota in _all_quotas(tracker):
        rows.append(
            _row(
                "quota",
                _e(quota.name),
                f"{quota.limit_value:,} {quota.metric} per {quota.period}",
                _filters(quota.dimension_filters, quota.per),
                raw=True,
            )
        )
    if not rows:
        return '<h2>Limits</h2><p class="muted" id="limits">No limits yet.</p>'
    return (
        '<h2>Limits</h2><table id="limits"><tr><th>kind</th><th>name</th><th>limit</th>'
        f"<th>applies to</th></tr>{''.join(rows)}</table>"
    )


def _busiest(tracker: Tracker, now: datetime) -> str:
    """Each busy customer's standing, judged on the dimensions of their latest event."""
    groups = tracker.usage_report.breakdown("customer_id", start_date=now - BUSIEST_OVER).data
    customers = [group.value for group in groups if group.value is not None][:BUSIEST]
    rows = []
    for customer in customers:
        latest = tracker.events.list(customer_id=customer, limit=1).data
        if not latest:
            continue
        dims = _dimensions(latest[0])
        rates = tracker.rate_limits.check(dims).rate_limits
        quotas = tracker.quotas.check(dims).quotas
        statuses: list[RateLimitStatus | QuotaStatus] = [*rates, *quotas]
        cells = [_standing(status) for status in statuses]
        rows.append(f"<tr><td>{_e(customer)}</td><td>{''.join(cells) or _none()}</td></tr>")
    if not rows:
        return '<h2>Busiest customers</h2><p class="muted" id="busiest">No events yet.</p>'
    return (
        "<h2>Busiest customers</h2>"
        f'<p class="muted">The {BUSIEST} with the most tokens over the last '
        f"{BUSIEST_OVER.days} days, against the limits their latest event matched.</p>"
        '<table id="busiest"><tr><th>customer</th><th>where they stand</th></tr>'
        f"{''.join(rows)}</table>"
    )


def _standing(status: RateLimitStatus | QuotaStatus) -> str:
    """A quota as used of limit; a rate limit as the bucket's tokens taken (full is 0)."""
    if isinstance(status, QuotaStatus):
        used, what = status.used, f"quota, {status.period}"
    else:
        used, what = status.limit - status.remaining, f"rate limit, per {status.window}"
    share = min(1.0, used / status.limit) if status.limit else 1.0
    over = " over" if status.exceeded or share >= 1 else ""
    return (
        f'<div class="standing{over}"><b>{_e(status.name)}</b> '
        f'<span class="muted">{_e(what)}</span> {_number(used)} of {status.limit:,} '
        f"({share:.0%})"
        f'<div class="bar"><div class="fill" style="width:{share * 100:.1f}%"></div></div></div>'
    )


def _chart(tracker: Tracker, now: datetime) -> str:
    """Tokens per hour over the last day, as bars; each bar's title has the exact totals."""
    start = (now - timedelta(hours=CHART_HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    points = {
        point.period_start: point
        for point in tracker.usage_report.timeseries("hour", start_date=start).data
    }
    hours = [start + timedelta(hours=i) for i in range(CHART_HOURS)]
    peak = max((point.total_tokens for point in points.values()), default=0) or 1
    width, height, bar, top = 720, 176, 720 / CHART_HOURS, 16
    bars = []
    for i, hour in enumerate(hours):
        point = points.get(hour)
        tokens = point.total_tokens if point is not None else 0
        tall = (height - 20 - top) * tokens / peak
        bars.append(
            f'<rect x="{i * bar + 2:.1f}" y="{height - 20 - tall:.1f}" width="{bar - 4:.1f}" '
            f'height="{tall:.1f}" fill="#3b7dd8"><title>{_point_title(hour, point)}</title></rect>'
        )
        if i % 6 == 0:
            bars.append(f'<text x="{i * bar + 2:.1f}" y="{height - 4}">{hour:%H:00}</text>')
    return (
        f"<h2>Tokens per hour, last {CHART_HOURS} hours (UTC)</h2>"
        f'<svg id="chart" width="{width}" height="{height}" role="img" '
        f'aria-label="tokens per hour; peak {peak:,}">'
        f'<text x="0" y="11">peak {peak:,} tokens an hour</text>'
        f"{''.join(bars)}</svg>"
    )


def _point_title(hour: datetime, point: UsagePoint | None) -> str:
    if point is None:
        return f"{hour:%Y-%m-%d %H:00}: no events"
    return (
        f"{hour:%Y-%m-%d %H:00}: {point.total_tokens:,} tokens, {point.total_events:,} events, "
        f"{_number(point.total_cost_cents)} cents"
    )


def _latest(tracker: Tracker) -> str:
    events = tracker.events.list(limit=LATEST).data
    if not events:
        return '<h2>Latest events</h2><p class="muted" id="events">No events yet.</p>'
    rows = "".join(
        f'<tr><td><time datetime="{_iso(event.created_at)}">{_iso(event.created_at)}</time></td>'
        f"<td>{_e(event.customer_id)}</td><td>{_e(event.event_type)}</td>"
        f"<td>{_e(event.model)}</td>"
        f'<td class="num">{_number(event.total_tokens)}</td>'
        f'<td class="num">{_number(event.cost_cents)}</td></tr>'
        for event in events
    )
    return (
        f"<h2>Latest {LATEST} events</h2>"
        '<table id="events"><tr><th>when</th><th>customer</th><th>type</th><th>model</th>'
        f'<th class="num">tokens</th><th class="num">cents</th></tr>{rows}</table>'
    )


def _all_rate_limits(tracker: Tracker) -> list[RateLimit]:
    found: list[RateLimit] = []
    cursor = None
    while True:
        page = tracker.rate_limits.list(limit=100, cursor=cursor)
        found.extend(page.data)
        if not page.has_more:
            return found
        cursor = page.next_cursor


def _all_quotas(tracker: Tracker) -> list[Quota]:
    found: list[Quota] = []
    cursor = None
    while True:
        page = tracker.quotas.list(limit=100, cursor=cursor)
        found.extend(page.data)
        if not page.has_more:
            return found
        cursor = page.next_cursor


def _dimensions(event: Event) -> dict[str, str]:
    """The dimensions a limit matches on (spec part 1): the fields, and string properties."""
    dims = {
        key: value
        for key, value in (
            ("customer_id", event.customer_id),
            ("event_type", event.event_type),
            ("model", event.model),
            ("provider", event.provider),
        )
        if value is not None
    }
    dims.update({k: v for k, v in event.properties.items() if isinstance(v, str)})
    return dims


def _filters(filters: dict[str, str | list[str]], per: list[str]) -> str:
    parts = [
        f"{_e(key)} = {_e(' or '.join(value) if isinstance(value, list) else value)}"
        for key, value in filters.items()
    ] or ["every event"]
    if per:
        parts.append(f'<span class="muted">each {_e(", ".join(per))}</span>')
    return "<br>".join(parts)


def _row(*cells: str, raw: bool = False) -> str:
    return "<tr>" + "".join(f"<td>{cell if raw else _e(cell)}</td>" for cell in cells) + "</tr>"


def _none() -> str:
    return '<span class="muted">no limit matches</span>'


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:,}"


def _e(text: object) -> str:
    return "" if text is None else html.escape(str(text))


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
