"""``events export`` and ``events import``: the ledger's events as JSON Lines.

An exported line is the ``Event`` wire form (``id``, ``createdAt``,
``customerId``, ...), plus the ``idempotencyKey`` the event was recorded
under when it has one.  Importing turns it back into a ``TrackPostRequest``:
``createdAt`` becomes ``timestamp``, so the event lands in the same quota
periods, and the line's ``idempotencyKey``, else its ``id``, becomes the
event's key, so importing the same file again records nothing new.  An
event imported from an export is exported with that key, so it keeps one
identity (its first key, else its first id) however many ledgers it
passes through.  A line may also be a plain ``TrackPostRequest`` in wire
form.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from limitry_local.cli.exits import CliError, ExitCode
from limitry_local.errors import InvalidRequestError, parse
from limitry_local.inputs import date_range
from limitry_local.models import (
    MAX_AMOUNT,
    MAX_BATCH,
    MAX_PROPERTY_DEPTH,
    Event,
    Page,
    TrackPostRequest,
)
from limitry_local.tracker import Tracker

PAGE = 100  # the largest page events.list serves


@dataclass(frozen=True)
class EventFilters:
    customer_id: str | None = None
    event_type: str | None = None
    model: str | None = None
    start_date: str | None = None
    end_date: str | None = None


def events_newest_first(tracker: Tracker, filters: EventFilters) -> Iterator[Event]:
    """Every matching event, most recently recorded first, one page in memory at a time."""
    page = _page(tracker, filters, None)
    yield from page.data
    while page.has_more and page.next_cursor is not None:
        page = _page(tracker, filters, page.next_cursor)
        yield from page.data


def events_oldest_first(tracker: Tracker, filters: EventFilters) -> Iterator[Event]:
    """Every matching event, in the order it was recorded, one page in memory at a time."""
    for page in _pages_oldest_first(tracker, filters):
        yield from page


def _pages_oldest_first(tracker: Tracker, filters: EventFilters) -> Iterator[list[Event]]:
    """Every matching event, in the order it was recorded, a page at a time.

    ``events.list`` pages newest first.  A first walk keeps only each page's
    cursor; a second reads the pages again from the last one back.  Pages
    behind a cursor never change (events are only ever added), and the
    newest page is kept from the first walk, so events recorded meanwhile
    are left out rather than shifting the pages.
    """
    newest = _page(tracker, filters, None)
    cursors: list[str] = []
    last = newest
    while last.has_more and last.next_cursor is not None:
        cursors.append(last.next_cursor)
        last = _page(tracker, filters, last.next_cursor)
    for cursor in reversed(cursors):
        yield list(reversed(_page(tracker, filters, cursor).data))
    if newest.data:
        yield list(reversed(newest.data))


def _page(tracker: Tracker, filters: EventFilters, cursor: str | None) -> Page[Event]:
    return tracker.events.list(
        customer_id=filters.customer_id,
        event_type=filters.event_type,
        model=filters.model,
        start_date=filters.start_date,
        end_date=filters.end_date,
        limit=PAGE,
        cursor=cursor,
    )


def export_events(
    tracker: Tracker,
    filters: EventFilters,
    out: TextIO,
    advance: Callable[[int], None] = lambda _: None,
) -> int:
    """Write matching events to ``out`` as JSON Lines, in recording order; returns how many.

    Each line is the ``Event``, plus ``idempotencyKey`` when the event was
    recorded under one.  ``advance`` is told of each page written.
    """
    count = 0
    for page in _pages_oldest_first(tracker, filters):
        keys = _idempotency_keys(tracker, filters, page)
        for event in page:
            line = event.model_dump(mode="json")
            key = keys.get(event.id)
            if key is not None:
                line["idempotencyKey"] = key
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
        count += len(page)
        advance(len(page))
    return count


def _idempotency_keys(
    tracker: Tracker, filters: EventFilters, page: list[Event]
) -> dict[str, str | None]:
    """The key each event of ``page`` (a page, oldest first) was recorded under, by id.

    ``Event`` does not carry it; the ledger's rows do.  A page's events are
    the matching ones from its oldest to its newest, so the same filters
    read below the newest one's place give the page's rows: one look-up
    and one indexed query a page.
    """
    if not page:
        return {}
    ledger = tracker.ledger
    newest = ledger.event_seq(page[-1].id)
    if newest is None:  # pragma: no cover - events are never removed
        raise CliError(f"event {page[-1].id} left the ledger during the export", ExitCode.LEDGER)
    start, end = date_range(filters.start_date, filters.end_date)
    rows = ledger.list_events(
        customer_id=filters.customer_id,
        event_type=filters.event_type,
        model=filters.model,
        start=start,
        end=end,
        before_seq=newest + 1,
        limit=len(page),
    )
    keys = {row.id: row.idempotency_key for _, row in rows}
    if keys.keys() != {event.id for event in page}:  # pragma: no cover - the same query
        raise CliError("the ledger changed under the export; run it again", ExitCode.LEDGER)
    return keys


@dataclass(frozen=True)
class Incoming:
    """One line to import: the request to ingest, and the names of an exported event.

    ``names`` holds an exported line's ``id`` and its ``idempotencyKey``
    (when it has one); it is empty for a line in request form.
    """

    request: dict[str, Any]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    read: int
    recorded: int

    @property
    def already_present(self) -> int:
        return self.read - self.recorded


def scan_events(source: str, lines: Iterable[str], *, check: bool = True) -> Iterator[Incoming]:
    """Each line of ``lines`` as a wire-form ``TrackPostRequest``, validated, as it is read.

    A bad line raises :class:`CliError` naming ``source`` and the line
    number; blank lines are skipped.  Only the current line is in memory.
    ``check=False`` skips the model's validation, for lines validated
    already (``events.batch`` validates them again as it records them).
    """
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            yield _validated(line, f"{source}:{number}", check=check)
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{source}:{number + 1}: not UTF-8 text ({exc.reason} at byte {exc.start} of a block)"
        ) from None


def _validated(line: str, where: str, *, check: bool) -> Incoming:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        # The decoder recurses once per bracket: Python's stack gives out
        # long before any event nests this deep (properties allow 32 levels).
        raise CliError(
            f"{where}: nested too deeply to read (brackets inside brackets, "
            f"about {sys.getrecursionlimit()} levels or more); an event's "
            f"properties nest at most {MAX_PROPERTY_DEPTH} levels"
        ) from None
    except ValueError:
        # The one other way json.loads fails: an integer longer than
        # Python converts (sys.get_int_max_str_digits()).
        raise CliError(
            f"{where}: a number too long to read (more than "
            f"{sys.get_int_max_str_digits()} digits); amounts are at most "
            f"{len(str(MAX_AMOUNT))} digits"
        ) from None
    if not isinstance(item, Mapping):
        raise CliError(f"{where}: expected a JSON object (one event), got {type(item).__name__}")
    incoming = _incoming(item, where)
    if check:
        try:
            parse(TrackPostRequest, incoming.request, {})
        except InvalidRequestError as exc:
            raise CliError(f"{where}: {exc.message}") from None
    return incoming


def import_events(
    tracker: Tracker,
    events: Iterable[Incoming],
    advance: Callable[[int], None] = lambda _: None,
) -> ImportResult:
    """Ingest ``events`` (never denied; they count toward quotas) in batches of 1000.

    Each batch is one transaction; ``advance`` is told how many lines each
    batch covered.  An exported event is skipped when its id or its key
    names an event of this ledger, as the event's id or as the key it was
    recorded under: so importing an export back into its own ledger adds
    nothing, nor does an export of a ledger that imported it (which carries
    this ledger's id as the key), nor an export made before exports carried
    keys.  ``events`` is read a batch at a time: memory holds one batch.
    """
    read = recorded = 0
    iterator = iter(events)
    while chunk := list(itertools.islice(iterator, MAX_BATCH)):
        fresh = [
            event.request
            for event in chunk
            if not any(_known_here(tracker, name) for name in event.names)
        ]
        if fresh:
            recorded += tracker.events.batch(fresh).count
        read += len(chunk)
        advance(len(chunk))
    return ImportResult(read=read, recorded=recorded)


@contextmanager
def open_source(path: Path | None, stdin: BinaryIO) -> Iterator[tuple[str, BinaryIO]]:
    """``(name for messages, seekable binary file)`` of the file, or of stdin when ``path`` is None.

    The import reads its input twice (validate every line, then write), so
    stdin is first copied to a temporary file: on disk, not in memory.
    """
    if path is None:
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(stdin, spool, 1 << 20)
            spool.seek(0)
            yield "<stdin>", spool
        return
    try:
        file = path.open("rb")
    except OSError as exc:
        raise CliError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with file:
        yield str(path), file


def lines_of(file: BinaryIO, advance: Callable[[int], None] = lambda _: None) -> Iterator[str]:
    """The file's lines from its start, decoded as UTF-8; ``advance`` is told the bytes read."""
    file.seek(0)
    for raw in file:
        advance(len(raw))
        yield raw.decode("utf-8")


def export_total(tracker: Tracker, filters: EventFilters) -> int:
    """How many events the export will write: one aggregate query, for the progress bar."""
    report = tracker.usage_report.breakdown(
        "event_type",
        customer_id=filters.customer_id,
        event_type=filters.event_type,
        model=filters.model,
        start_date=filters.start_date,
        end_date=filters.end_date,
    )
    return sum(group.total_events for group in report.data)


def _incoming(item: Mapping[str, Any], where: str) -> Incoming:
    """An exported ``Event`` line as a ``TrackPostRequest``; a request line as it is."""
    request = dict(item)
    if "id" not in request:
        return Incoming(request)
    event_id = request.pop("id")
    if not isinstance(event_id, str) or not event_id:
        raise CliError(f"{where}: id: must be the exported event's id, a non-empty string")
    created = request.pop("createdAt", request.pop("created_at", None))
    if created is not None and "timestamp" not in request:
        request["timestamp"] = created
    own_key = request.get("idempotencyKey")
    if own_key is None:
        own_key = request.get("idempotency_key")
    if own_key is None:
        request.pop("idempotencyKey", None)
        request.pop("idempotency_key", None)
        request["idempotencyKey"] = event_id
    names: tuple[str, ...] = (event_id,)
    if isinstance(own_key, str) and own_key and own_key != event_id:
        names = (event_id, own_key)
    # An Event writes every field, absent ones as null; a request leaves them out.
    return Incoming({key: value for key, value in request.items() if value is not None}, names)


def _known_here(tracker: Tracker, name: str) -> bool:
    """Whether an event of this ledger has ``name`` as its id or as its idempotency key."""
    return _recorded_here(tracker, name) or tracker.ledger.idempotent(name) is not None


def _recorded_here(tracker: Tracker, event_id: str) -> bool:
    """Whether this ledger already holds an event with this id.

    The public API has no ``events.get(id)``; a cursor is an event id, and
    ``events.list`` refuses one this ledger does not hold, so asking for the
    page after it answers the question in one indexed look-up.  (tests pin
    this: re-importing into the exporting ledger must add nothing.)
    """
    try:
        tracker.events.list(limit=1, cursor=event_id)
    except InvalidRequestError:
        return False
    return True
