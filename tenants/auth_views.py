"""Password reset, throttled on request and always open to the owner with a link.

Asking for a reset link is limited per source address and per e-mail address
(`tenants.throttle`): it sends mail, and it tells nothing, so counting every request is
enough. Using a link is not limited: the link is the owner's way back in during any
log-in cool-off. It logs them in at once (so their address becomes one they have logged in
from) and clears the cool-off of their account.
"""

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from tenants import login_throttle, throttle
from tenants.forms import MemberPasswordResetForm


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    form_class = MemberPasswordResetForm

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        limits = []
        address = throttle.client_address(request)
        if address:
            limits.append(throttle.Limit(throttle.RESET_ADDRESS, address))
        email = request.POST.get("email", "").strip().lower()
        if email:
            limits.append(throttle.Limit(throttle.RESET_EMAIL, email))
        until = throttle.refused_until(limits)
        if until is not None:
            message = _(
                "Too many password reset requests from your address or for this e-mail "
                "address. Please try again in %(wait)s. A reset link we have already "
                "e-mailed you still works."
            ) % {"wait": throttle.wait_text(until)}
            context = self.get_context_data(form=self.get_form_class()(initial={"email": email}))
            context["throttle_message"] = message
            return self.render_to_response(context, status=429)
        throttle.count(limits)
        return super().post(request, *args, **kwargs)


class ThrottledPasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    post_reset_login = True
    post_reset_login_backend = "django.contrib.auth.backends.ModelBackend"

    def form_valid(self, form) -> HttpResponse:
        response = super().form_valid(form)
        throttle.forget(login_throttle.account_limits(form.user.get_username()))
        return response
