"""How results are shown: rich tables and lines for people, plain JSON for scripts.

Every value from the ledger reaches rich as :class:`~rich.text.Text`, never
as a markup string, so a limit named ``[bold]`` prints as written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic.alias_generators import to_camel
from rich.console import Group
from rich.table import Table
from rich.text import Text

from limitry_local.cli.plan import KIND_LABEL, Change
from limitry_local.cli.usage import Grouping, UsageRow, period_label, total
from limitry_local.metrics import from_units, micro_cents
from limitry_local.models import (
    Quota,
    QuotaStatus,
    RateLimit,
    RateLimitStatus,
    UsageBreakdownResponse,
    UsageGroup,
    UsagePoint,
    UsageTimeseriesResponse,
)


def to_json(value: Any) -> str:
    """The one JSON style of the command: indented, keys in wire order, ASCII-safe."""
    return json.dumps(value, indent=2)


# --- limits list ----------------------------------------------------------------


def limits_table(rate_limits: Sequence[RateLimit], quotas: Sequence[Quota]) -> Group:
    rates = Table(title="rate limits", title_justify="left")
    for column in ("name", "limit", "window", "counts", "filters", "per", "enabled", "id"):
        rates.add_column(column, justify="right" if column == "limit" else "left", overflow="fold")
    for limit in rate_limits:
        rates.add_row(
            Text(limit.name),
            f"{limit.limit_value:,}",
            Text(limit.window),
            "tokens" if limit.metric == "total_tokens" else "requests",
            _filters(limit.dimension_filters),
            Text(", ".join(limit.per) or "-"),
            "yes" if limit.enabled else "no",
            limit.id,
        )
    quota_table = Table(title="quotas", title_justify="left")
    for column in ("name", "limit", "metric", "period", "filters", "per", "id"):
        quota_table.add_column(
            column, justify="right" if column == "limit" else "left", overflow="fold"
        )
    for quota in quotas:
        quota_table.add_row(
            Text(quota.name),
            f"{quota.limit_value:,}",
            quota.metric,
            quota.period,
            _filters(quota.dimension_filters),
            Text(", ".join(quota.per) or "-"),
            quota.id,
        )
    return Group(rates, Text(""), quota_table)


def limits_json(rate_limits: Sequence[RateLimit], quotas: Sequence[Quota]) -> dict[str, Any]:
    return {
        "rateLimits": [limit.model_dump(mode="json") for limit in rate_limits],
        "quotas": [quota.model_dump(mode="json") for quota in quotas],
    }


# --- limits apply ---------------------------------------------------------------

_MARK = {"create": "+", "update": "~", "unchanged": "=", "delete": "-", "keep": " "}
_STYLE = {"create": "green", "update": "yellow", "unchanged": "dim", "delete": "red", "keep": ""}


def plan_lines(changes: Sequence[Change], *, dry_run: bool) -> list[Text]:
    """One line per limit, like a diff: ``+`` create, ``~`` update, ``-`` delete, ``=`` same."""
    lines = []
    for change in changes:
        label = f"{KIND_LABEL[change.kind]} {change.name!r}"
        line = Text(f"{_MARK[change.action]} {label}: ", style=_STYLE[change.action])
        if change.action == "create":
            line.append(("would be created" if dry_run else "created") + "  ")
            line.append(_fields(change.fields))
        elif change.action == "update":
            line.append(("would be updated" if dry_run else "updated") + "  ")
            line.append(
                "  ".join(
                    f"{to_camel(name)}: {_value(old)} -> {_value(new)}"
                    for name, (old, new) in change.diff.items()
                )
            )
        elif change.action == "delete":
            line.append(
                f"{'would be deleted' if dry_run else 'deleted'} (not in the file; --prune)"
            )
        elif change.action == "keep":
            line.append("not in the file, left as it is (--prune would delete it)")
        else:
            line.append("unchanged")
        lines.append(line)
    return lines


def plan_summary(changes: Sequence[Change], *, dry_run: bool) -> str:
    counts = dict.fromkeys(_MARK, 0)
    for change in changes:
        counts[change.action] += 1
    done = "would be " if dry_run else ""
    summary = (
        f"{counts['create']} {done}created, {counts['update']} {done}updated, "
        f"{counts['delete']} {done}deleted, {counts['unchanged']} unchanged, "
        f"{counts['keep']} left as they are"
    )
    return summary + ("; dry run, nothing was changed" if dry_run else "")


def plan_json(changes: Sequence[Change], *, dry_run: bool) -> dict[str, Any]:
    return {
        "dryRun": dry_run,
        "changes": [
            {
                "action": change.action,
                "kind": change.kind,
                "name": change.name,
                "id": change.id,
                "fields": {to_camel(k): v for k, v in change.fields.items()},
                "diff": {
                    to_camel(k): {"from": old, "to": new} for k, (old, new) in change.diff.items()
                },
            }
            for change in changes
        ],
    }


# --- usage ----------------------------------------------------------------------


def usage_table(rows: Sequence[UsageRow], grouping: Grouping) -> Table:
    title = "usage, all time" if grouping == "all" else f"usage per {grouping} (UTC)"
    table = Table(title=title, title_justify="left")
    table.add_column("period")
    table.add_column("customer")
    table.add_column("model")
    for column in ("events", "input", "output", "total tokens", "cost (cents)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            period_label(row.period_start, grouping),
            Text(row.customer_id or "-"),
            Text(row.model or "-"),
            *_totals(row),
        )
    if len(rows) > 1:
        table.add_section()
        table.add_row("total", "", "", *_totals(total(rows)), style="bold")
    return table


def usage_json(rows: Sequence[UsageRow], grouping: Grouping) -> dict[str, Any]:
    return {
        "period": grouping,
        "rows": [row.to_json() for row in rows],
        "total": {k: v for k, v in total(rows).to_json().items() if k.startswith("total")},
    }


# --- breakdown and timeseries -----------------------------------------------------

CHART_METRICS = {
    "tokens": "total_tokens",
    "events": "total_events",
    "cost": "total_cost_cents",
    "input": "total_input_tokens",
    "output": "total_output_tokens",
}
"""``timeseries --metric`` choices, and the point field each one charts."""
_BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"


def breakdown_table(report: UsageBreakdownResponse) -> Table:
    table = Table(title=f"usage by {report.group_by}{_range(report)}", title_justify="left")
    table.add_column(report.group_by)
    for column in ("events", "input", "output", "total tokens", "cost (cents)", "share"):
        table.add_column(column, justify="right")
    tokens = sum(group.total_tokens for group in report.data)
    for group in report.data:
        share = group.total_tokens / tokens if tokens else 0.0
        table.add_row(Text(group.value or "-"), *_report_totals(group), f"{share:.1%}")
    if len(report.data) > 1:
        table.add_section()
        table.add_row("total", *_report_totals(_sum(report.data)), "100.0%", style="bold")
    return table


def timeseries_chart(report: UsageTimeseriesResponse, metric: str) -> Table:
    """One line per period: its totals and a bar of ``metric`` (block characters)."""
    name = CHART_METRICS[metric]
    table = Table(
        title=f"usage per {report.interval} (UTC){_range(report)}, bars: {metric}",
        title_justify="left",
    )
    table.add_column("period")
    for column in ("events", "input", "output", "total tokens", "cost (cents)"):
        table.add_column(column, justify="right")
    table.add_column(metric, no_wrap=True)
    values = [float(getattr(point, name)) for point in report.data]
    top = max(values, default=0.0)
    for point, value in zip(report.data, values, strict=True):
        table.add_row(
            _period_start(point.period_start, report.interval),
            *_report_totals(point),
            Text(bar(value, top), style="cyan"),
        )
    if len(report.data) > 1:
        table.add_section()
        table.add_row("total", *_report_totals(_sum(report.data)), "", style="bold")
    return table


def bar(value: float, top: float, width: int = _BAR_WIDTH) -> str:
    """A horizontal bar, ``value`` of ``top`` over ``width`` cells, in eighths of a cell.

    Plain Unicode block characters: rich is already here, and a chart library
    would not draw a bar per table row any better.
    """
    if top <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / top * width * 8))  # a non-zero value always shows
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def _range(report: UsageBreakdownResponse | UsageTimeseriesResponse) -> str:
    start, end = report.start_date, report.end_date
    if start is None and end is None:
        return ""
    shown = f"{'' if start is None else _when(int(start.timestamp()))} to "
    return f", {shown}{'' if end is None else _when(int(end.timestamp()))}".replace(" 00:00:00", "")


def _period_start(start: datetime, interval: str) -> str:
    if interval == "hour":
        return start.strftime("%Y-%m-%d %H:00")
    if interval == "week":
        return f"week of {start:%Y-%m-%d}"
    return start.strftime("%Y-%m-%d")


def _report_totals(totals: UsageGroup | UsagePoint) -> list[str]:
    return [
        f"{totals.total_events:,}",
        f"{totals.total_input_tokens:,}",
        f"{totals.total_output_tokens:,}",
        f"{totals.total_tokens:,}",
        f"{totals.total_cost_cents:,}",
    ]


def _sum(items: Sequence[UsageGroup] | Sequence[UsagePoint]) -> UsageGroup:
    micro = sum(micro_cents(item.total_cost_cents) or 0 for item in items)
    return UsageGroup(
        value=None,
        total_events=sum(item.total_events for item in items),
        total_tokens=sum(item.total_tokens for item in items),
        total_input_tokens=sum(item.total_input_tokens for item in items),
        total_output_tokens=sum(item.total_output_tokens for item in items),
        total_cost_cents=from_units("total_cost_cents", micro),
    )


# --- check ----------------------------------------------------------------------


def check_table(rates: Sequence[RateLimitStatus], quotas: Sequence[QuotaStatus]) -> Table:
    table = Table(title="limits matching these dimensions", title_justify="left")
    if rates:
        # Said where it is read: a check from this command cannot see another process's buckets.
        table.caption = (
            "rate-limit buckets live in the memory of the process that tracks; "
            "this command's are new, so full"
        )
        table.caption_justify = "left"
    table.add_column("kind")
    table.add_column("name")
    for column in ("used", "limit", "remaining"):
        table.add_column(column, justify="right")
    table.add_column("window / period")
    table.add_column("resets (UTC)")
    table.add_column("status")
    for rate in rates:
        table.add_row(
            "rate limit",
            Text(rate.name),
            f"{rate.limit - rate.remaining:,}",
            f"{rate.limit:,}",
            f"{rate.remaining:,}",
            Text(rate.window),
            _when(rate.reset),
            _status(rate.exceeded),
        )
    for quota in quotas:
        table.add_row(
            "quota",
            Text(quota.name),
            f"{quota.used:,}",
            f"{quota.limit:,}",
            f"{quota.remaining:,}",
            f"{quota.period} ({quota.metric})",
            "-" if quota.reset is None else _when(quota.reset),
            _status(quota.exceeded),
        )
    return table


def check_json(
    allowed: bool, rates: Sequence[RateLimitStatus], quotas: Sequence[QuotaStatus]
) -> dict[str, Any]:
    return {
        "allowed": allowed,
        "rateLimits": [rate.model_dump(mode="json") for rate in rates],
        "quotas": [quota.model_dump(mode="json") for quota in quotas],
    }


# --- pieces -----------------------------------------------------------------------


def _filters(filters: dict[str, str | list[str]]) -> Text:
    if not filters:
        return Text("-")
    return Text(
        ", ".join(
            f"{key}={'|'.join(value) if isinstance(value, list) else value}"
            for key, value in filters.items()
        )
    )


def _fields(fields: dict[str, Any]) -> str:
    return "  ".join(f"{to_camel(name)}={_value(value)}" for name, value in fields.items())


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _totals(row: UsageRow) -> list[str]:
    return [
        f"{row.events:,}",
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        f"{row.total_tokens:,}",
        f"{row.cost_cents:,}",
    ]


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _status(exceeded: bool) -> Text:
    return Text("exceeded", style="bold red") if exceeded else Text("ok", style="green")
