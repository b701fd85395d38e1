"""One beat entry runs the purge once a day; its task records the run as started by beat."""

import pytest
from django.conf import settings

from config.celery_app import app
from ops.models import PurgeRun
from ops.tasks import purge_zombies


def test_one_daily_beat_entry_calls_the_purge_task():
    entries = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"].startswith("ops.")]
    assert [e["task"] for e in entries] == ["ops.tasks.purge_zombies"]
    schedule = entries[0]["schedule"]
    assert (schedule.hour, schedule.minute) == ({3}, {30})  # once a day, 03:30 UTC
    assert len(schedule.day_of_week) == 7 and len(schedule.day_of_month) == 31
    assert "ops.tasks.purge_zombies" in app.tasks


@pytest.mark.django_db
def test_the_beat_task_records_a_run_started_by_the_schedule(host):
    run_id = purge_zombies()
    run = PurgeRun.objects.get(pk=run_id)
    assert (run.trigger, run.state, run.dry_run) == ("beat", "finished", False)
