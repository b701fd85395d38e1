"""The Basic calls and Failed calls tables as a tenant admin reads them: fields, FCI in
plain words, filters, pages, CSV export (its streaming over the real ASGI server is in
tests/tenants/test_cdr_export_streaming.py)."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from sipnodes.cdr_selectors import CdrFilter, Cursor, cdr_page
from sipnodes.engine.cdr import CallTag
from sipnodes.ingest.parse import cdr_columns
from sipnodes.models import Cdr
from tenants.models import Tenant
from tests.factories import SAMPLE_T0, make_member, sample_cdr

pytestmark = pytest.mark.django_db

T0 = datetime.fromtimestamp(SAMPLE_T0, UTC)  # 2026-09-21 14:13:20 UTC


def add_cdr(server, start: datetime = T0, **changes) -> Cdr:
    """A CDR of `server` as ingest stores the engine's CDR."""
    cdr = sample_cdr(start.timestamp(), **changes)
    return Cdr.objects.create(server=server, **cdr_columns(cdr.data()))


def table(client, server, kind: str = "basic", **params) -> str:
    url = reverse("tenants:cdr-table", args=[server.pk, kind])
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def rows_of(html: str) -> int:
    return html.count('<tr class="cdr">')


def test_answered_calls_are_basic_calls_and_the_others_failed_calls(owner_client, tenant_a):
    server = tenant_a.server
    add_cdr(server, caller="100", dialed="9101", callee="101")
    add_cdr(server, T0 + timedelta(minutes=1), answered=False, caller="102", dialed="103")

    basic = table(owner_client, server, "basic")
    assert rows_of(basic) == 1
    # Start in the tenant's zone (Asia/Shanghai by default), the other times on that clock.
    assert "<td>2026-09-21 22:13:20 Asia/Shanghai</td>" in basic
    assert "<td>100</td><td>9101</td><td>101</td><td>local user</td>" in basic
    assert "<td>22:13:20</td><td>22:13:22</td><td>22:13:52</td>" in basic  # ring, answer, release
    assert "<code>callTag=1;cause=16</code>" in basic
    assert "callTag 1: The caller hung up an answered call (BYE from the O-side)." in basic
    assert "cause 16: Normal call clearing: someone hung up" in basic
    assert "Times are on the Asia/Shanghai clock. CDRs are kept for 7 days" in basic

    failed = table(owner_client, server, "failed")
    assert rows_of(failed) == 1
    assert "<td>102</td><td>103</td>" in failed
    assert "<code>callTag=4;cause=17</code>" in failed
    assert "callTag 4: The callee side answered the INVITE with a final 3xx-6xx" in failed
    assert "cause 17: User busy" in failed
    assert "<td>486</td>" in failed


def test_the_fci_is_explained_in_chinese_for_a_chinese_member(client, tenant_a):
    member = make_member(tenant_a.tenant, "viewer")
    member.language = "zh-hans"
    member.save()
    client.force_login(member)
    add_cdr(tenant_a.server, answered=False, call_tag=CallTag.NO_ANSWER_TIMEOUT, cause=19)
    html = table(client, tenant_a.server, "failed")
    assert "失败呼叫" in html
    assert "callTag 5：无人在服务器的无应答时限内接听，服务器取消了呼叫。" in html
    assert "原因值 19：无应答：电话振铃但无人接听" in html


def test_the_number_filter_matches_caller_dialed_or_callee(owner_client, tenant_a):
    server = tenant_a.server
    add_cdr(server, caller="200", dialed="300", callee="300")
    add_cdr(server, T0 + timedelta(seconds=1), caller="201", dialed="9200", callee="200")
    add_cdr(server, T0 + timedelta(seconds=2), caller="202", dialed="200", callee="200")
    add_cdr(server, T0 + timedelta(seconds=3), caller="203", dialed="204", callee="204")
    assert rows_of(table(owner_client, server, number="200")) == 3
    assert rows_of(table(owner_client, server, number="204")) == 1
    assert rows_of(table(owner_client, server, number="20")) == 0  # exact numbers only
    assert "Use digits, *, # and + only." in table(owner_client, server, number="x';--")


def test_the_date_filter_takes_whole_days_on_the_tenant_clock(owner_client, tenant_a):
    server = tenant_a.server
    # 15:59:59 and 16:00:00 UTC: the last second of 21 September and the first of the 22nd
    # in Shanghai (UTC+8).
    add_cdr(server, datetime(2026, 9, 21, 15, 59, 59, tzinfo=UTC))
    add_cdr(server, datetime(2026, 9, 21, 16, 0, 0, tzinfo=UTC))
    assert rows_of(table(owner_client, server, since="2026-09-21", until="2026-09-21")) == 1
    assert rows_of(table(owner_client, server, since="2026-09-22")) == 1
    assert rows_of(table(owner_client, server, until="2026-09-22")) == 2


def test_the_cause_filter(owner_client, tenant_a):
    server = tenant_a.server
    add_cdr(server, answered=False, cause=17)
    add_cdr(server, T0 + timedelta(seconds=1), answered=False, cause=21, status=603)
    html = table(owner_client, server, "failed", cause="21")
    assert rows_of(html) == 1 and "<td>603</td>" in html
    assert '<option value="17">17 – User busy</option>' in html


def test_pages_go_older_and_newer_without_gaps_or_repeats(tenant_a):
    """Ten CDRs, four of them starting in the same microsecond, in pages of three."""
    server = tenant_a.server
    starts = [T0 + timedelta(seconds=n // 4 * 10 + (n >= 4)) for n in range(10)]
    made = [add_cdr(server, start) for start in starts]
    expected = sorted(made, key=lambda c: (c.started_at, c.pk), reverse=True)

    seen, page = [], cdr_page(server=server, answered=True, cdr_filter=CdrFilter(), size=3)
    pages = [page]
    while page.older is not None:
        page = cdr_page(
            server=server, answered=True, cdr_filter=CdrFilter(), after=page.older, size=3
        )
        pages.append(page)
    for p in pages:
        seen += p.cdrs
    assert [c.pk for c in seen] == [c.pk for c in expected]
    assert [len(p.cdrs) for p in pages] == [3, 3, 3, 1]

    back = cdr_page(
        server=server, answered=True, cdr_filter=CdrFilter(), before=pages[2].newer, size=3
    )
    assert [c.pk for c in back.cdrs] == [c.pk for c in pages[1].cdrs]
    assert pages[0].newer is None


def test_a_cursor_survives_its_text_form_to_the_microsecond():
    cursor = Cursor(datetime(2026, 9, 21, 13, 33, 20, 123457, tzinfo=UTC), 42)
    assert Cursor.parse(str(cursor)) == cursor
    assert Cursor.parse("nonsense") is None
    assert Cursor.parse("99999999999999999999999.1") is None


def test_the_page_links_carry_the_filters(owner_client, tenant_a):
    server = tenant_a.server
    for n in range(60):
        add_cdr(server, T0 + timedelta(seconds=n), caller="555")
    html = table(owner_client, server, number="555")
    assert rows_of(html) == 50
    older = html.split('id="older-page" href="')[1].split('"')[0].replace("&amp;", "&")
    assert older.startswith("?number=555&after=")
    second = owner_client.get(reverse("tenants:cdr-table", args=[server.pk, "basic"]) + older)
    assert rows_of(second.content.decode()) == 10


def read_csv(response) -> list[list[str]]:
    async def read() -> bytes:
        return b"".join([piece async for piece in response.streaming_content])

    body = async_to_sync(read)()
    assert body.startswith(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def test_the_csv_export_holds_the_filtered_table(owner_client, tenant_a):
    server = tenant_a.server
    add_cdr(server, caller="100")
    add_cdr(server, T0 + timedelta(seconds=5), caller="777")
    add_cdr(server, T0 + timedelta(seconds=9), answered=False, caller="777")
    url = reverse("tenants:cdr-export", args=[server.pk, "basic"])
    response = owner_client.get(url, {"number": "777"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="basic-calls-')
    header, *rows = read_csv(response)
    assert header[0] == "Start (Asia/Shanghai)" and header[-1] == "Call-ID"
    assert len(rows) == 1
    row = dict(zip(header, rows[0], strict=True))
    assert row["Start (Asia/Shanghai)"] == "2026-09-21T22:13:25.000+08:00"
    assert row["Answer (Asia/Shanghai)"] == "2026-09-21T22:13:27.000+08:00"
    assert row["Caller"] == "777" and row["FCI"] == "callTag=1;cause=16"
    assert row["What the callTag means"] == CallTag.CALLER_BYE.__doc__
    assert row["What the cause means"] == "Normal call clearing: someone hung up"


def test_the_csv_header_and_words_follow_the_member_language(client, tenant_a):
    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(time_zone="Europe/Berlin")
    member = make_member(tenant_a.tenant, "viewer")
    member.language = "zh-hans"
    member.save()
    client.force_login(member)
    add_cdr(tenant_a.server, answered=False)
    response = client.get(reverse("tenants:cdr-export", args=[tenant_a.server.pk, "failed"]))
    header, row = read_csv(response)
    assert header[0] == "开始时间（Europe/Berlin）"
    assert row[0] == "2026-09-21T16:13:20.000+02:00"
    assert "用户忙" in row
