from django.apps import AppConfig


class SipnodesConfig(AppConfig):
    name = "sipnodes"
    verbose_name = "SIP nodes"
