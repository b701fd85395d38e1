from celery import shared_task
from django.utils import timezone

from sipnodes import services


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def lapse_paid_editions() -> int:
    return services.lapse_paid_editions(today=timezone.localdate())
