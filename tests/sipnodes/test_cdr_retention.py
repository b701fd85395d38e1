"""CDR retention: each edition's days (7 by default), deleted in bounded batches by a
periodic task."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sipnodes import tasks
from sipnodes.cdr_services import cdr_delete_expired
from sipnodes.ingest.parse import cdr_columns
from sipnodes.models import Cdr, EditionPolicy, VirtualServer
from tests.factories import make_tenant_with_server, sample_cdr

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 9, 21, 12, 0, tzinfo=UTC)


def add_cdrs(server: VirtualServer, days_ago: float, count: int = 1) -> None:
    start = (NOW - timedelta(days=days_ago)).timestamp()
    for n in range(count):
        Cdr.objects.create(server=server, **cdr_columns(sample_cdr(start + n).data()))


def ages(server: VirtualServer) -> list[int]:
    return sorted({(NOW - cdr.started_at).days for cdr in server.cdrs.all()})


def test_each_edition_keeps_its_days(host):
    free = make_tenant_with_server("Free").server
    paid = make_tenant_with_server("Paid").server
    VirtualServer.objects.filter(pk=paid.pk).update(edition=50)
    EditionPolicy.objects.filter(edition=50).update(cdr_retention_days=30)
    for server in (free, paid):
        add_cdrs(server, 1)
        add_cdrs(server, 6.9)
        add_cdrs(server, 7.1)
        add_cdrs(server, 31)

    assert cdr_delete_expired(now=NOW) == 3
    assert ages(free) == [1, 6]  # the default week
    assert ages(paid) == [1, 6, 7]  # 30 days


def test_an_edition_without_a_policy_keeps_a_week(host):
    EditionPolicy.objects.all().delete()
    server = make_tenant_with_server("Free").server
    add_cdrs(server, 6)
    add_cdrs(server, 8)
    assert cdr_delete_expired(now=NOW) == 1
    assert ages(server) == [6]


def test_deletes_go_in_short_batches_and_stop_when_the_time_is_spent(host):
    server = make_tenant_with_server("Busy").server
    add_cdrs(server, 10, count=25)
    add_cdrs(server, 1, count=3)

    assert cdr_delete_expired(now=NOW, time_budget=0) == 0  # nothing yet: next run

    with CaptureQueriesContext(connection) as queries:
        assert cdr_delete_expired(now=NOW, batch_size=10) == 25
    deletes = [
        q["sql"] for q in queries if q["sql"].startswith("DELETE") and '"edition" = 5 ' in q["sql"]
    ]
    assert len(deletes) == 3  # 10 + 10 + 5, each one statement of at most 10 rows
    assert all("LIMIT 10" in sql for sql in deletes)
    assert server.cdrs.count() == 3


def test_the_periodic_task_runs_the_retention(host):
    server = make_tenant_with_server("Free").server
    old = (datetime.now(UTC) - timedelta(days=8)).timestamp()
    Cdr.objects.create(server=server, **cdr_columns(sample_cdr(old).data()))
    assert tasks.delete_expired_cdrs.apply().get() == 1
    schedule = settings.CELERY_BEAT_SCHEDULE["delete-expired-cdrs"]
    assert schedule["task"] == "sipnodes.tasks.delete_expired_cdrs"


def test_an_operator_sets_an_editions_retention_in_the_admin(operator_client):
    response = operator_client.get("/admin/sipnodes/editionpolicy/")
    assert response.status_code == 200
    assert "5 clients (free)" in response.content.decode()
