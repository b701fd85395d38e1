from django.core.management import call_command

from sipnodes.models import SipHost
from tenants.models import User


def test_bootstrap_creates_the_default_host_and_one_operator_once(db, capsys):
    call_command("bootstrap")
    first = capsys.readouterr().out
    assert "SIP host local (127.0.0.1): created" in first
    password = first.split("with password ")[1].split()[0]
    operator = User.objects.get(is_staff=True)
    assert operator.is_superuser and operator.check_password(password)
    host = SipHost.objects.get()
    assert (host.public_address, host.listen_address) == ("127.0.0.1", "127.0.0.1")

    call_command("bootstrap")
    second = capsys.readouterr().out
    assert "exists" in second and "with password" not in second
    assert User.objects.filter(is_staff=True).count() == 1
    assert SipHost.objects.count() == 1
