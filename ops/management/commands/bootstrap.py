from django.core.management.base import BaseCommand

from ops.services import platform_bootstrap


class Command(BaseCommand):
    help = "Create the default SIP host and an operator account if there are none."

    def handle(self, *args, **options) -> None:
        result = platform_bootstrap()
        verb = "created" if result.host_created else "exists"
        self.stdout.write(f"SIP host {result.host.name} ({result.host.public_address}): {verb}")
        if result.operator_password:
            self.stdout.write(
                f"Operator account created. Log in at http://127.0.0.1:8000/admin/ as "
                f"{result.operator_email} with password {result.operator_password}\n"
                "(shown once; change it with: .venv/bin/python manage.py changepassword "
                f"{result.operator_email})"
            )
        else:
            self.stdout.write(
                f"Operator: log in at http://127.0.0.1:8000/admin/ as {result.operator_email} "
                f"(forgot it? .venv/bin/python manage.py changepassword {result.operator_email})"
            )
