"""A member's own language and their tenant's time zone, for every page they see."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation

from tenants import selectors


class MemberPreferencesMiddleware:
    """After LocaleMiddleware (browser's choice) and authentication: a member's profile wins.

    A member's chosen language is used wherever they log in, not only in the browser
    where they chose it; times are shown in their tenant's zone. Operators without a
    tenant see UTC, the zone times are stored in.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated:
            if user.language:
                translation.activate(user.language)
                request.LANGUAGE_CODE = user.language
            tenant = selectors.member_tenant(user)
            if tenant is not None:
                timezone.activate(tenant.time_zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
