from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ops import second_factor
from ops.management.commands.bootstrap import terminal_language
from tenants.models import User


class Command(BaseCommand):
    help = gettext_lazy(
        "Remove an operator's second factor (authenticator and recovery codes), for one who "
        "lost them: they set up a new one at their next visit to the operator pages."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "username", help=gettext_lazy("the operator's e-mail address (or username)")
        )

    def handle(self, *args, **options) -> None:
        with translation.override(terminal_language()):
            name = options["username"]
            # Operators log in with their e-mail address; their username is accepted too.
            user = (
                User.objects.filter(email__iexact=name).first()
                or User.objects.filter(username=name).first()
            )
            if user is None:
                raise CommandError(_("No user %(username)s.") % options)
            removed = second_factor.reset(user)
            self.stdout.write(
                ngettext(
                    "%(username)s: %(count)d second-factor device removed. Their next visit "
                    "to /ops/ or /admin/, after the password, sets up a new authenticator.",
                    "%(username)s: %(count)d second-factor devices removed. Their next visit "
                    "to /ops/ or /admin/, after the password, sets up a new authenticator.",
                    removed,
                )
                % {"username": user.email, "count": removed}
            )
