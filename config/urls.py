from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from tenants.forms import MemberPasswordResetForm

# No i18n_patterns: a page has one address in every language (the language comes from the
# member's profile, the switcher's cookie or the browser).
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="tenants:server-list"), name="home"),
    path("admin/", admin.site.urls),
    path("ops/", include("ops.urls")),
    path(
        "accounts/password_reset/",
        auth_views.PasswordResetView.as_view(form_class=MemberPasswordResetForm),
        name="password_reset",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("tenants.urls")),
]
