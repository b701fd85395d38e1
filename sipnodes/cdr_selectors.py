"""Reads of one server's CDRs: the Basic calls (answered) and Failed calls tables.

Pages are read by keyset: a page is the CDRs just older (or newer) than a cursor
(started_at, id), found by an index range scan, so the thousandth page costs what the
first does on a million CDRs (tests/sipnodes/test_cdr_plan.py reads the plans). The
number filter is a UNION of three index scans (caller, dialed, callee), each stopping
after one page: with OR, PostgreSQL misjudges how many rows a rare number has and
reads the whole table to find none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from sipnodes.models import DEFAULT_CDR_RETENTION_DAYS, Cdr, EditionPolicy, VirtualServer

PAGE_SIZE = 50
NUMBER_FIELDS = ("caller", "dialed", "callee")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class CdrFilter:
    """What the tables may be narrowed to; times are UTC instants, `until` excluded."""

    since: datetime | None = None
    until: datetime | None = None
    number: str = ""
    cause: int | None = None


@dataclass(frozen=True)
class Cursor:
    """A CDR's place in the newest-first order; as text `<epoch microseconds>.<id>`."""

    started_at: datetime
    id: int

    @classmethod
    def of(cls, cdr: Cdr) -> Cursor:
        return cls(cdr.started_at, cdr.pk)

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """None for anything that is not a cursor (a hand-edited link shows the first page)."""
        micros, _, pk = text.partition(".")
        if not (micros.lstrip("-").isdigit() and pk.isdigit()):
            return None
        try:
            return cls(_EPOCH + int(micros) * _MICROSECOND, int(pk))
        except OverflowError:
            return None

    def __str__(self) -> str:
        return f"{(self.started_at - _EPOCH) // _MICROSECOND}.{self.id}"


@dataclass(frozen=True)
class CdrPage:
    cdrs: list[Cdr]
    newer: Cursor | None  # link to the page before this one, if there is one
    older: Cursor | None  # link to the page after this one, if there is one


def _filtered(server: VirtualServer, answered: bool, cdr_filter: CdrFilter) -> QuerySet[Cdr]:
    cdrs = Cdr.objects.filter(server=server, answered=answered)
    if cdr_filter.since is not None:
        cdrs = cdrs.filter(started_at__gte=cdr_filter.since)
    if cdr_filter.until is not None:
        cdrs = cdrs.filter(started_at__lt=cdr_filter.until)
    if cdr_filter.cause is not None:
        cdrs = cdrs.filter(cause=cdr_filter.cause)
    return cdrs


def _beyond(cdrs: QuerySet[Cdr], cursor: Cursor | None, older: bool) -> QuerySet[Cdr]:
    """The CDRs past `cursor` in one direction. `started_at <=` (or `>=`) bounds the index
    range; the exclusion only drops the few rows that share the cursor's start time."""
    if cursor is None:
        return cdrs
    if older:
        return cdrs.filter(started_at__lte=cursor.started_at).exclude(
            started_at=cursor.started_at, id__gte=cursor.id
        )
    return cdrs.filter(started_at__gte=cursor.started_at).exclude(
        started_at=cursor.started_at, id__lte=cursor.id
    )


def cdr_slice_query(
    *,
    server: VirtualServer,
    answered: bool,
    cdr_filter: CdrFilter,
    cursor: Cursor | None = None,
    older: bool = True,
    limit: int = PAGE_SIZE,
) -> QuerySet[Cdr]:
    """Up to `limit` CDRs past `cursor` (from the newest without one), nearest first."""
    order = ["-started_at", "-id"] if older else ["started_at", "id"]
    cdrs = _beyond(_filtered(server, answered, cdr_filter), cursor, older)
    if not cdr_filter.number:
        return cdrs.order_by(*order)[:limit]
    first, *others = [
        cdrs.filter(**{field: cdr_filter.number}).order_by(*order)[:limit]
        for field in NUMBER_FIELDS
    ]
    return first.union(*others).order_by(*order)[:limit]


def cdr_slice(**kwargs: Any) -> list[Cdr]:
    """`cdr_slice_query`'s CDRs."""
    return list(cdr_slice_query(**kwargs))


def cdr_page(
    *,
    server: VirtualServer,
    answered: bool,
    cdr_filter: CdrFilter,
    after: Cursor | None = None,
    before: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> CdrPage:
    """One page of a table, newest first: the first, the one older than `after`, or the
    one newer than `before`."""
    kwargs = {"server": server, "answered": answered, "cdr_filter": cdr_filter}
    if before is not None:
        cdrs = cdr_slice(**kwargs, cursor=before, older=False, limit=size + 1)
        more = len(cdrs) > size
        cdrs = cdrs[:size][::-1]
        return CdrPage(
            cdrs=cdrs,
            newer=Cursor.of(cdrs[0]) if more else None,
            older=Cursor.of(cdrs[-1]) if cdrs else before,
        )
    cdrs = cdr_slice(**kwargs, cursor=after, limit=size + 1)
    more = len(cdrs) > size
    cdrs = cdrs[:size]
    return CdrPage(
        cdrs=cdrs,
        newer=(Cursor.of(cdrs[0]) if cdrs else after) if after is not None else None,
        older=Cursor.of(cdrs[-1]) if more else None,
    )


def cdr_retention_days() -> dict[int, int]:
    """Days each edition keeps CDRs; an edition without a policy keeps the default."""
    days = dict(EditionPolicy.objects.values_list("edition", "cdr_retention_days"))
    return {
        int(edition): days.get(int(edition), DEFAULT_CDR_RETENTION_DAYS)
        for edition in VirtualServer.Edition.values
    }
