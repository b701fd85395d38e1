import os

from django.core.management.base import BaseCommand
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ops.services import platform_bootstrap


def terminal_language() -> str:
    """The language of the operator's shell, as gettext programs choose theirs (LC_ALL,
    LC_MESSAGES, LANG): zh_CN.UTF-8 reads Chinese; C, POSIX or nothing reads English."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := os.environ.get(name):
            try:
                return translation.get_supported_language_variant(
                    value.split(".")[0].replace("_", "-").lower()
                )
            except LookupError:
                return "en"
    return "en"


class Command(BaseCommand):
    help = gettext_lazy("Create the default SIP host and an operator account if there are none.")

    def handle(self, *args, **options) -> None:
        with translation.override(terminal_language()):
            self.bootstrap_and_report()

    def bootstrap_and_report(self) -> None:
        result = platform_bootstrap()
        host = {"name": result.host.name, "address": result.host.public_address}
        if result.host_created:
            self.stdout.write(_("SIP host %(name)s (%(address)s): created") % host)
        else:
            self.stdout.write(_("SIP host %(name)s (%(address)s): exists") % host)
        operator = {"email": result.operator_email, "password": result.operator_password}
        if result.operator_password:
            self.stdout.write(
                _(
                    "Operator account created. Log in at http://127.0.0.1:8000/admin/ as "
                    "%(email)s with password %(password)s\n"
                    "(shown once; change it with: .venv/bin/python manage.py changepassword "
                    "%(email)s)"
                )
                % operator
            )
        else:
            self.stdout.write(
                _(
                    "Operator: log in at http://127.0.0.1:8000/admin/ as %(email)s "
                    "(forgot it? .venv/bin/python manage.py changepassword %(email)s)"
                )
                % operator
            )
