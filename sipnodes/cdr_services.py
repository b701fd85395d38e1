"""CDR retention: each edition keeps its servers' CDRs for its `EditionPolicy` days."""

import logging
import time
from datetime import datetime, timedelta

from django.db.models import Subquery

from sipnodes.cdr_selectors import cdr_retention_days
from sipnodes.models import Cdr

log = logging.getLogger(__name__)

RETENTION_BATCH = 5000


def cdr_delete_expired(
    *, now: datetime, batch_size: int = RETENTION_BATCH, time_budget: float = 120.0
) -> int:
    """Delete CDRs older than their server's edition keeps them; the number deleted.

    Each batch is one short DELETE of at most `batch_size` rows in its own transaction
    (autocommit), so ingest and the CDR pages never wait long on its locks. After
    `time_budget` seconds it stops; the next run goes on where it stopped.
    """
    deadline = time.monotonic() + time_budget
    deleted = 0
    for edition, days in cdr_retention_days().items():
        expired = Cdr.objects.filter(
            server__edition=edition, started_at__lt=now - timedelta(days=days)
        ).order_by("started_at")  # the oldest first, along cdr_started_idx
        while time.monotonic() < deadline:
            batch = Subquery(expired.values("pk")[:batch_size])
            count, _ = Cdr.objects.filter(pk__in=batch).delete()
            deleted += count
            if count < batch_size:
                break
        else:
            log.info("CDR retention: time budget spent after %d CDRs; more next run", deleted)
            break
    return deleted
