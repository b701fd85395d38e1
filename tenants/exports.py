"""The CDR tables' rows with their FCI in plain words, on the page and as CSV.

The CSV is a spreadsheet's file: UTF-8 with a byte-order mark (Excel then reads Chinese
names right), one header row naming the tenant's zone, ISO 8601 times with their UTC
offset. It is written batch by batch as it is read, so its size never reaches memory.
"""

import csv
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from asgiref.sync import sync_to_async
from django.utils.translation import gettext as _

from sipnodes.cdr_selectors import CdrFilter, Cursor, cdr_slice
from sipnodes.cdr_texts import Q850_CAUSES, RELEASED_BY, ROUTES, call_tag_text, cause_text
from sipnodes.engine.cdr import CallTag
from sipnodes.models import Cdr, VirtualServer

EXPORT_BATCH = 1000


@dataclass(frozen=True)
class Words:
    """The words of CDR values in the language active when made: a CSV is written after
    its view has returned, when no language is active any more."""

    routes: dict[str, str]
    released_by: dict[str, str]
    call_tags: dict[int | None, str]
    causes: dict[int | None, str]

    @classmethod
    def now(cls) -> "Words":
        return cls(
            routes={key: str(word) for key, word in ROUTES.items()},
            released_by={key: str(word) for key, word in RELEASED_BY.items()},
            call_tags={tag: call_tag_text(tag) for tag in [*CallTag, None]},
            causes={cause: cause_text(cause) for cause in [*Q850_CAUSES, None]},
        )


@dataclass(frozen=True)
class CdrRow:
    cdr: Cdr
    route: str
    released_by: str
    call_tag: str  # what the callTag means
    cause: str  # the cause's Q.850 name


def cdr_rows(cdrs: Iterable[Cdr], words: Words | None = None) -> list[CdrRow]:
    words = words or Words.now()
    return [
        CdrRow(
            cdr=cdr,
            route=words.routes.get(cdr.route, cdr.route),
            released_by=words.released_by.get(cdr.released_by, cdr.released_by),
            call_tag=words.call_tags.get(cdr.call_tag) or call_tag_text(cdr.call_tag),
            cause=words.causes.get(cdr.cause) or cause_text(cdr.cause),
        )
        for cdr in cdrs
    ]


def _header(zone: tzinfo) -> list[str]:
    times = {"zone": str(zone)}
    return [
        _("Start (%(zone)s)") % times,
        _("Caller"),
        _("Dialed"),
        _("Callee"),
        _("Route"),
        _("Ring (%(zone)s)") % times,
        _("Answer (%(zone)s)") % times,
        _("Release (%(zone)s)") % times,
        _("Talk (seconds)"),
        _("Released by"),
        _("SIP status"),
        _("FCI"),
        _("callTag"),
        _("What the callTag means"),
        _("Cause"),
        _("What the cause means"),
        _("Call-ID"),
    ]


def _iso(value: datetime | None, zone: tzinfo) -> str:
    return "" if value is None else value.astimezone(zone).isoformat(timespec="milliseconds")


def _fields(row: CdrRow, zone: tzinfo) -> list[object]:
    cdr = row.cdr
    return [
        _iso(cdr.started_at, zone),
        cdr.caller,
        cdr.dialed,
        cdr.callee,
        row.route,
        _iso(cdr.ring_at, zone),
        _iso(cdr.answered_at, zone),
        _iso(cdr.released_at, zone),
        cdr.talk_seconds,
        row.released_by,
        cdr.status,
        cdr.fci,
        cdr.call_tag,
        row.call_tag,
        cdr.cause,
        row.cause,
        cdr.call_id,
    ]


def cdr_csv(
    *, server: VirtualServer, answered: bool, cdr_filter: CdrFilter, zone: tzinfo
) -> AsyncIterator[str]:
    """The CSV text in pieces of `EXPORT_BATCH` rows; its words in the language active
    now (the header and `Words` are made before the first piece is asked for)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_header(zone))
    header = "\ufeff" + buffer.getvalue()
    words = Words.now()

    async def pieces() -> AsyncIterator[str]:
        yield header
        cursor = None
        while True:
            cdrs = await sync_to_async(cdr_slice)(
                server=server,
                answered=answered,
                cdr_filter=cdr_filter,
                cursor=cursor,
                limit=EXPORT_BATCH,
            )
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(_fields(row, zone) for row in cdr_rows(cdrs, words))
            yield buffer.getvalue()
            if len(cdrs) < EXPORT_BATCH:
                return
            cursor = Cursor.of(cdrs[-1])

    return pieces()
