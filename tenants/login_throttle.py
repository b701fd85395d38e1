"""Log-in throttling: per source address and per account, never against the owner at home.

Every log-in form (the portal's and the admin's) goes through `authenticate()`, so the check
sits in an authentication backend listed first (`ThrottleBackend`): during a cool-off it
refuses the attempt before any password is compared. Failures are counted from Django's
`user_login_failed` signal, and `LoginThrottleMiddleware` turns a refused attempt into a page
that says so in plain words (HTTP 429). The counting and the growing cool-offs are
`tenants.throttle`'s.

Which limits an attempt for account U from address A counts against:
- A is one U has logged in from before (`LoginAddress`): only U's own failures from A. An
  attacker elsewhere, or guessing other accounts from A, never pauses U there.
- otherwise: A's failures for any account, and U's failures from every address U has never
  logged in from.

The owner is never locked out for good: every cool-off ends; an address they have logged in
from is paused only by failures for their account from that same address; and a password
reset link (which logs them in: `tenants.auth_views.ThrottledPasswordResetConfirmView`)
works during any cool-off and clears the account's.
"""

from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _

from tenants import throttle
from tenants.models import LoginAddress

# A request attribute: when the cool-off that refused (or was just started by) this
# attempt ends.
REFUSED_UNTIL = "sipcloud_login_refused_until"


def normalize_username(username: str | None) -> str:
    return (username or "").strip().lower()


def is_known_address(username: str, address: str | None) -> bool:
    if not username or not address:
        return False
    return LoginAddress.objects.filter(user__email__iexact=username, address=address).exists()


def login_limits(request: HttpRequest, username: str | None) -> list[throttle.Limit]:
    """The limits an attempt to log in as `username` from this request counts against."""
    cache: dict[str, list[throttle.Limit]] = request.__dict__.setdefault(
        "_sipcloud_login_limits", {}
    )
    account = normalize_username(username)
    if account not in cache:
        address = throttle.client_address(request)
        if is_known_address(account, address):
            limits = [throttle.Limit(throttle.LOGIN_KNOWN_ADDRESS, f"{account}|{address}")]
        else:
            limits = []
            if address:
                limits.append(throttle.Limit(throttle.LOGIN_ADDRESS, address))
            if account:
                limits.append(throttle.Limit(throttle.LOGIN_ACCOUNT, account))
        cache[account] = limits
    return cache[account]


def account_limits(username: str) -> list[throttle.Limit]:
    """The account's own limit (attempts from addresses it has never logged in from)."""
    return [throttle.Limit(throttle.LOGIN_ACCOUNT, normalize_username(username))]


class ThrottleBackend:
    """First in AUTHENTICATION_BACKENDS: refuses an attempt during a cool-off.

    It never logs anyone in (and has no `get_user`, so no session is ever bound to it and
    `force_login` passes it by). Raising PermissionDenied makes `authenticate()` stop at once,
    compare no password and send `user_login_failed`. Without a request (`manage.py
    shell`, the test client's `login()`) there is no address to count against: it stands
    aside.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None or username is None:
            return None
        until = throttle.refused_until(login_limits(request, username))
        if until is not None:
            setattr(request, REFUSED_UNTIL, until)
            raise PermissionDenied
        return None


@receiver(user_login_failed)
def count_failed_login(sender, credentials: dict, request: HttpRequest | None = None, **kwargs):
    if request is None or getattr(request, REFUSED_UNTIL, None) is not None:
        return  # no address to count; or refused, and refusals are not counted
    username = credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username"))
    until = throttle.count(login_limits(request, username))
    if until is not None:
        setattr(request, REFUSED_UNTIL, until)


@receiver(user_logged_in)
def remember_login_address(sender, user, request: HttpRequest | None = None, **kwargs) -> None:
    address = throttle.client_address(request) if request is not None else None
    if address is None:
        return
    LoginAddress.objects.update_or_create(
        user=user, address=address, defaults={"last_login_at": timezone.now()}
    )
    # A success clears this account's failures from this address, nothing more: clearing
    # the address's would let anyone with an account reset the count of their address.
    username = normalize_username(user.get_username())
    throttle.forget([throttle.Limit(throttle.LOGIN_KNOWN_ADDRESS, f"{username}|{address}")])


def refusal_message(until) -> str:
    return _(
        "Too many failed log-ins. For your safety, logging in here is paused for "
        "%(wait)s, and each new series of failures makes the pause longer. If this is "
        "your account, you do not have to wait: reset your password, and the link we "
        "e-mail you logs you in at once. Failures elsewhere never pause an address you "
        "have logged in from before."
    ) % {"wait": throttle.wait_text(until)}


def refused_response(request: HttpRequest) -> HttpResponse:
    """The log-in page again, saying why the attempt was refused and when to try again."""
    until = getattr(request, REFUSED_UNTIL)
    form = AuthenticationForm(request, initial={"username": request.POST.get("username", "")})
    context = {
        "form": form,
        "next": request.POST.get("next", request.GET.get("next", "")),
        "throttle_message": refusal_message(until),
    }
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(max(1, int((until - timezone.now()).total_seconds())))
    return response


class LoginThrottleMiddleware:
    """Answers an attempt that was refused, or that started a cool-off, with `refused_response`.

    Whichever log-in view ran (the portal's or the admin's), its own answer is replaced.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(request, REFUSED_UNTIL, None) is not None and request.method == "POST":
            return refused_response(request)
        return response
