"""A big CSV export over the real ASGI portal: 100,000 CDRs stream out while the worker's
memory stays flat, and the file is what a spreadsheet opens."""

import csv
import http.client
import io
import time
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from tests.cdr_data import insert_cdrs
from tests.factories import make_member, make_tenant_with_server
from tests.portal import rss_kib, session_of

pytestmark = pytest.mark.e2e

ROWS = 100_000
# A buffered export of these 100,000 rows would hold their ~33 MB of CSV text at once; the
# streamed one holds one batch of 1,000 rows (`EXPORT_BATCH`) at a time.
MAX_GROWTH_KIB = 20 * 1024


def export(portal, path: str, session: str, on_piece=lambda: None) -> tuple[bytes, float]:
    """The whole body, read piece by piece, calling `on_piece` between reads; its seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=30)
    started = time.monotonic()
    conn.request("GET", path, headers={"Cookie": f"sessionid={session}"})
    response = conn.getresponse()
    assert response.status == 200
    pieces = []
    while piece := response.read(256 * 1024):
        pieces.append(piece)
        on_piece()
    conn.close()
    return b"".join(pieces), time.monotonic() - started


def test_100000_cdrs_stream_out_in_flat_memory(portal, host, capsys):
    acme = make_tenant_with_server("Acme")
    insert_cdrs(server_id=acme.server.pk, count=ROWS, newest=datetime(2026, 9, 21, tzinfo=UTC))
    session = session_of(make_member(acme.tenant, "viewer"))
    [worker] = portal.worker_pids()
    path = reverse("tenants:cdr-export", args=[acme.server.pk, "basic"])
    export(portal, path + "?number=100", session)  # warm up: imports, caches, first batch
    before = rss_kib(worker)
    peak = before

    def sample() -> None:
        nonlocal peak
        peak = max(peak, rss_kib(worker))

    everything = reverse("tenants:cdr-export", args=[acme.server.pk, "failed"])
    body, seconds = export(portal, everything, session, sample)
    body_basic, seconds_basic = export(portal, path, session, sample)

    assert body.startswith(b"\xef\xbb\xbf")
    header, *rows = list(csv.reader(io.StringIO(body_basic.decode("utf-8-sig"))))
    failed_rows = body.count(b"\n") - 1
    assert len(rows) + failed_rows == ROWS  # every CDR, in one table or the other
    assert header[0] == "Start (Asia/Shanghai)"
    assert rows[0][0] == "2026-09-21T08:00:00.000+08:00"  # the newest first, in the zone
    assert sum(1 for row in rows if row[0].startswith("Start")) == 0  # one header row
    growth = peak - before
    assert growth < MAX_GROWTH_KIB, f"the worker grew by {growth} KiB while exporting"
    with capsys.disabled():
        print(
            f"\nCSV export: {len(rows)} rows in {seconds_basic:.2f} s "
            f"({len(rows) / seconds_basic:,.0f} rows/s), {failed_rows} in {seconds:.2f} s; "
            f"worker RSS {before // 1024} MiB, +{growth / 1024:.1f} MiB at most"
        )
