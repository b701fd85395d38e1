from django.urls import path

from ops import second_factor_views, views

app_name = "ops"

urlpatterns = [
    path("", views.hosts, name="hosts"),
    path("tenants/", views.tenants, name="tenants"),
    path("servers/", views.servers, name="servers"),
    path("purge/", views.purge, name="purge"),
    path("purge/runs/", views.run_start, name="run-start"),
    path("purge/runs/<int:pk>/", views.purge_run, name="purge-run"),
    path("purge/policy/", views.policy, name="policy"),
    path("purge/exemptions/", views.exemption_add, name="exemption-add"),
    path("purge/exemptions/<int:pk>/delete/", views.exemption_delete, name="exemption-delete"),
    path("second-factor/", second_factor_views.overview, name="second-factor"),
    path("second-factor/verify/", second_factor_views.verify, name="second-factor-verify"),
    path("second-factor/enrol/", second_factor_views.enrol, name="second-factor-enrol"),
    path(
        "second-factor/recovery-codes/",
        second_factor_views.recovery_codes,
        name="second-factor-recovery-codes",
    ),
]
