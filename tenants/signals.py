from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.utils import timezone

from tenants import services


@receiver(user_logged_in)
def record_login(sender, user, **kwargs) -> None:
    services.user_record_login(user=user, at=timezone.now())
