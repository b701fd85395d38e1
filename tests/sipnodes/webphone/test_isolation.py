"""aiortc (~40 MB) is the gateway's alone: neither the SIP worker nor the portal loads it."""

import subprocess
import sys

import pytest

from tests.support import ROOT

CHECK = "import sys, {modules}; sys.exit('aiortc' in sys.modules or 'av' in sys.modules)"


@pytest.mark.parametrize(
    "modules",
    [
        "sipnodes.engine.server, sipnodes.engine.__main__",  # the worker
        "sipnodes.webphone.channels, sipnodes.webphone.sip",  # what the portal and tests use
    ],
)
def test_aiortc_is_not_imported(modules):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(modules=modules)], cwd=ROOT, capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()


def test_the_portal_does_not_import_aiortc():
    code = (
        "import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
        "'config.settings.test'); django.setup(); import tenants.views, "
        "sipnodes.webphone_services; sys.exit('aiortc' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
