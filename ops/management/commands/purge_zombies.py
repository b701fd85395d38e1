from django.core.management.base import BaseCommand, CommandParser
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ops import selectors, services
from ops.management.commands.bootstrap import terminal_language
from ops.models import PurgeRun


class Command(BaseCommand):
    help = gettext_lazy(
        "Find virtual servers nobody has used for the inactivity window and purge them "
        "(the daily task does the same)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help=gettext_lazy("Report only; change nothing.")
        )
        parser.add_argument(
            "--limit", type=int, help=gettext_lazy("Act on at most this many servers.")
        )

    def handle(self, *args, dry_run: bool, limit: int | None, **options) -> None:
        with translation.override(terminal_language()):
            run = services.run_queue(trigger=PurgeRun.Trigger.COMMAND, dry_run=dry_run)
            run = services.run_execute(run_id=run.pk, limit=limit)
            for item in selectors.run_items(run=run):
                line = f"{item.get_outcome_display()}: {item.tenant_name} / {item.server_name}"
                self.stdout.write(f"{line}: {item.reason}")
            self.stdout.write(
                _(
                    "Run %(id)s %(state)s: %(candidates)s candidates, %(purged)s purged, "
                    "%(parked)s parked, %(noticed)s notices, %(skipped)s skipped, "
                    "%(errors)s errors."
                )
                % {
                    "id": run.pk,
                    "state": run.get_state_display(),
                    "candidates": run.candidates,
                    "purged": run.purged,
                    "parked": run.parked,
                    "noticed": run.noticed,
                    "skipped": run.skipped,
                    "errors": run.errors,
                }
            )
