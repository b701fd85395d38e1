from django.contrib import messages
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.utils.translation import gettext as _

from ops import services


@receiver(user_logged_in)
def restore_parked_servers(sender, request, user, **kwargs) -> None:
    """A member's login gives back the servers the zombie purge parked, and says so."""
    for server in services.parked_restore_for_member(user=user):
        if request is not None and hasattr(request, "_messages"):
            messages.info(
                request,
                _(
                    "%(server)s had been parked after a long time without use. Your login "
                    "has restored it: its worker is starting, at the new SIP address "
                    "%(address)s."
                )
                % {"server": server.name, "address": server.sip_address},
            )
