"""The CDR tables stay fast on 1,000,000 CDRs of one server: PostgreSQL's own plans
(EXPLAIN ANALYZE) show index scans that read one page's rows, whatever the page or filter."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from sipnodes.cdr_selectors import CdrFilter, Cursor, cdr_slice_query
from sipnodes.models import Cdr
from tests.cdr_data import insert_cdrs
from tests.factories import make_tenant_with_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

COUNT = 1_000_000
NEWEST = datetime(2026, 9, 21, tzinfo=UTC)
SPACING = 0.6  # seconds between calls: a week of a busy server
PAGE = 51  # a page and one more, to know whether there is a next one
# The started_at index too: with one server in the table, PostgreSQL may rightly walk it.
TABLE_INDEXES = {
    "cdr_started_idx",
    "cdr_table_idx",
    "cdr_table_cause_idx",
    "cdr_caller_idx",
    "cdr_dialed_idx",
    "cdr_callee_idx",
}


def plan_of(query) -> dict:
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
        [[result]] = cursor.fetchall()
    return (json.loads(result) if isinstance(result, str) else result)[0]


def nodes(node: dict) -> list[dict]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


def assert_reads_one_page(plan: dict, scans: int = 1) -> None:
    """Only index scans of the table's indexes, each reading about a page of rows, where
    OFFSET or a filtered scan would read up to a million."""
    all_nodes = nodes(plan["Plan"])
    reads = [n for n in all_nodes if n.get("Relation Name") == "sipnodes_cdr"]
    assert len(reads) == scans, json.dumps(plan, indent=1)
    for read in reads:
        assert read["Node Type"] in {"Index Scan", "Index Only Scan"}, read["Node Type"]
        assert read["Index Name"] in TABLE_INDEXES
        # A page, and a row or two more where a sort on (started_at, id) needs to see
        # where a run of equal start times ends.
        assert read["Actual Rows"] <= 2 * PAGE
        assert read.get("Rows Removed by Filter", 0) <= PAGE
    assert not any(n["Node Type"] == "Seq Scan" for n in all_nodes)
    assert plan["Execution Time"] < 100, f"{plan['Execution Time']} ms"


def test_every_page_and_filter_reads_one_page_of_a_million_cdrs(host):
    server = make_tenant_with_server("Busy").server
    insert_cdrs(server_id=server.pk, count=COUNT, newest=NEWEST, spacing=SPACING)

    def query(answered=True, cdr_filter=None, **kwargs):
        return cdr_slice_query(
            server=server,
            answered=answered,
            cdr_filter=cdr_filter or CdrFilter(),
            limit=PAGE,
            **kwargs,
        )

    assert_reads_one_page(plan_of(query()))
    # The 18,000th page of the week's answered calls (900,000 CDRs in) and back one page.
    deep = NEWEST - timedelta(seconds=900_000 * SPACING)
    cdr = Cdr.objects.filter(server=server, started_at=deep).get()
    assert_reads_one_page(plan_of(query(cursor=Cursor.of(cdr))))
    assert_reads_one_page(plan_of(query(cursor=Cursor.of(cdr), older=False)))
    # Failed calls of one cause within two days, and from a deep cursor.
    two_days = CdrFilter(since=NEWEST - timedelta(days=5), until=NEWEST - timedelta(days=3))
    by_cause = CdrFilter(since=two_days.since, until=two_days.until, cause=21)
    assert_reads_one_page(plan_of(query(False, by_cause)))
    assert_reads_one_page(plan_of(query(False, CdrFilter(cause=102))))  # a cause never seen
    assert_reads_one_page(plan_of(query(False, two_days, cursor=Cursor.of(cdr))))
    # A number: one that is in thousands of CDRs, and one that is in none (with OR,
    # PostgreSQL would read all 700,000 answered CDRs to find that out).
    for number in ("123", "99999"):
        assert_reads_one_page(plan_of(query(cdr_filter=CdrFilter(number=number))), scans=3)
        plan = plan_of(query(cdr_filter=CdrFilter(number=number), cursor=Cursor.of(cdr)))
        assert_reads_one_page(plan, scans=3)
