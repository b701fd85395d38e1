"""Runs the ingest consumer: worker events from the Redis Stream into the database."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from sipnodes.ingest.consumer import BATCH_SIZE, IngestConsumer


class Command(BaseCommand):
    help = "Write worker events from the Redis Stream to the database until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="ingest what is waiting, then exit")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)

    def handle(self, *args: object, once: bool, batch_size: int, **options: object) -> None:
        consumer = IngestConsumer(redis_url=settings.REDIS_URL, batch_size=batch_size)
        with consumer.stopping_on_signals():
            consumer.run(drain=once)
