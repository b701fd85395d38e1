"""The purge's Celery tasks: thin, idempotent (a finished run is left alone)."""

from celery import shared_task

from ops import services
from ops.models import PurgeRun

# A capped run of 500 servers takes a minute or two; an interrupted one is resumed.
RUN_TIME_LIMIT = 3600


@shared_task(acks_late=True, soft_time_limit=RUN_TIME_LIMIT - 60, time_limit=RUN_TIME_LIMIT)
def run_purge(run_id: int) -> str:
    """Execute a run queued from the operator's page."""
    return services.run_execute(run_id=run_id).state


@shared_task(acks_late=True, soft_time_limit=RUN_TIME_LIMIT - 60, time_limit=RUN_TIME_LIMIT)
def purge_zombies() -> int:
    """The daily run (beat); its id is in the audit."""
    run = services.run_queue(trigger=PurgeRun.Trigger.BEAT, dry_run=False)
    return services.run_execute(run_id=run.pk).pk
