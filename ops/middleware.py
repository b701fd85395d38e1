"""The second factor in front of the operator pages (/ops/) and the Django admin (/admin/)."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from ops.second_factor import redirect_to_second_factor


class OperatorSecondFactorMiddleware:
    """Send a staff session not yet verified with a second factor to the verify page.

    Goes after django-otp's OTPMiddleware (which tells whether the session is verified).
    Only /ops/ and /admin/ are guarded, and only for staff: tenant members and visitors go
    on as before (the admin's own login page and the ops pages' 404 still answer them). The
    verify and enrolment pages themselves are open to an unverified operator.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._guarded: tuple[str, ...] = ()
        self._open: frozenset[str] = frozenset()

    def _load_paths(self) -> None:
        self._guarded = (reverse("admin:index"), reverse("ops:hosts"))
        self._open = frozenset(
            {reverse("ops:second-factor-verify"), reverse("ops:second-factor-enrol")}
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not self._guarded:
            self._load_paths()
        if (
            request.path.startswith(self._guarded)
            and request.path not in self._open
            and request.user.is_authenticated
            and request.user.is_staff
            and not request.user.is_verified()
        ):
            return redirect_to_second_factor(request)
        return self.get_response(request)
