from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from tenants import auth_views

# No i18n_patterns: a page has one address in every language (the language comes from the
# member's profile, the switcher's cookie or the browser).
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="tenants:server-list"), name="home"),
    path("admin/", admin.site.urls),
    path("ops/", include("ops.urls")),
    # Throttled on request; a link logs its owner in (docs/security.md).
    path(
        "accounts/password_reset/",
        auth_views.ThrottledPasswordResetView.as_view(),
        name="password_reset",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.ThrottledPasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("tenants.urls")),
]
