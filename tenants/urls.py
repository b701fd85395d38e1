from django.urls import path, re_path

from tenants import views

app_name = "tenants"

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("language/", views.set_language, name="set-language"),
    path("account/", views.account, name="account"),
    path("verify/<str:token>/", views.verify_email, name="verify-email"),
    path("servers/", views.server_list, name="server-list"),
    path("servers/<int:pk>/", views.server_detail, name="server-detail"),
    path("servers/<int:pk>/settings/", views.server_settings, name="server-settings"),
    path("servers/<int:pk>/callback/", views.server_callback, name="server-callback"),
    re_path(
        r"^servers/(?P<pk>[0-9]+)/(?P<action>start|stop|restart)/$",
        views.server_power,
        name="server-power",
    ),
    re_path(
        r"^servers/(?P<pk>[0-9]+)/calls/(?P<kind>basic|failed)/$",
        views.cdr_table,
        name="cdr-table",
    ),
    re_path(
        r"^servers/(?P<pk>[0-9]+)/calls/(?P<kind>basic|failed)/export\.csv$",
        views.cdr_export,
        name="cdr-export",
    ),
    path("servers/<int:pk>/live/", views.live_calls, name="live-calls"),
    path("servers/<int:pk>/live/events/", views.live_calls_events, name="live-calls-events"),
    path("servers/<int:pk>/phone/", views.web_phone, name="web-phone"),
    path("servers/<int:pk>/phone/sessions/", views.web_phone_open, name="web-phone-open"),
    path(
        "servers/<int:pk>/phone/sessions/<str:session>/",
        views.web_phone_action,
        name="web-phone-action",
    ),
    path(
        "servers/<int:pk>/phone/sessions/<str:session>/events/",
        views.web_phone_events,
        name="web-phone-events",
    ),
    path("servers/<int:server_pk>/users/new/", views.local_user_create, name="user-create"),
    path("servers/<int:server_pk>/users/<int:pk>/", views.local_user_edit, name="user-edit"),
    path(
        "servers/<int:server_pk>/users/<int:pk>/delete/",
        views.local_user_delete,
        name="user-delete",
    ),
    path(
        "servers/<int:server_pk>/users/<int:pk>/reset-password/",
        views.local_user_reset_password,
        name="user-reset-password",
    ),
    path(
        "servers/<int:server_pk>/users/<int:pk>/call-settings/",
        views.local_user_call_settings,
        name="user-call-settings",
    ),
    path("servers/<int:pk>/hunt-groups/", views.hunt_group_list, name="hunt-group-list"),
    path(
        "servers/<int:server_pk>/hunt-groups/new/",
        views.hunt_group_create,
        name="hunt-group-create",
    ),
    path(
        "servers/<int:server_pk>/hunt-groups/<int:pk>/",
        views.hunt_group_edit,
        name="hunt-group-edit",
    ),
    path(
        "servers/<int:server_pk>/hunt-groups/<int:pk>/delete/",
        views.hunt_group_delete,
        name="hunt-group-delete",
    ),
    path("servers/<int:pk>/feature-codes/", views.feature_codes, name="feature-codes"),
    path("servers/<int:pk>/trunks/", views.trunk_list, name="trunk-list"),
    path("servers/<int:server_pk>/trunks/new/", views.trunk_create, name="trunk-create"),
    path("servers/<int:server_pk>/trunks/<int:pk>/", views.trunk_edit, name="trunk-edit"),
    path(
        "servers/<int:server_pk>/trunks/<int:pk>/delete/",
        views.trunk_delete,
        name="trunk-delete",
    ),
    path("branch-networks/", views.branch_network_list, name="branch-network-list"),
    path("branch-networks/new/", views.branch_network_create, name="branch-network-create"),
    path("branch-networks/<int:pk>/", views.branch_network_edit, name="branch-network-edit"),
    path(
        "branch-networks/<int:pk>/delete/",
        views.branch_network_delete,
        name="branch-network-delete",
    ),
    path("servers/<int:pk>/dial-plan/", views.dial_rule_list, name="dial-rule-list"),
    path(
        "servers/<int:server_pk>/dial-plan/new/",
        views.dial_rule_create,
        name="dial-rule-create",
    ),
    path(
        "servers/<int:server_pk>/dial-plan/<int:pk>/",
        views.dial_rule_edit,
        name="dial-rule-edit",
    ),
    path(
        "servers/<int:server_pk>/dial-plan/<int:pk>/delete/",
        views.dial_rule_delete,
        name="dial-rule-delete",
    ),
]
