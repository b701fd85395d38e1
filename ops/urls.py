from django.urls import path

from ops import views

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
]
