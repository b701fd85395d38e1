from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SipnodesConfig(AppConfig):
    name = "sipnodes"
    verbose_name = _("SIP nodes")
