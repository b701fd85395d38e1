"""Chinese and English in the portal, each member's language, each tenant's time zone."""

import datetime
import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import translation

from sipnodes import services as sipnode_services
from sipnodes.models import LocalUser, SipHost, VirtualServer
from tenants.models import Tenant, User
from tests.factories import make_member

CHINESE = {"headers": {"accept-language": "zh-CN,zh;q=0.9,en;q=0.5"}}
ENGLISH = {"headers": {"accept-language": "en-US,en;q=0.9"}}
SIGNUP = {
    "email": "li.lei@example.cn",
    "password": "correct horse battery",
    "company_name": "上海云通信有限公司",
    "accept_terms": "on",
    "time_zone": "Asia/Shanghai",
}
CREATED = datetime.datetime(2026, 9, 21, 8, 53, 20, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def no_language_left_active():
    """Requests activate languages in this thread; later tests expect the default again."""
    yield
    translation.deactivate()


def signup(client, **changes):
    data = {**SIGNUP, **changes}
    return client.post(reverse("tenants:signup"), data, **CHINESE)


def test_a_visitor_reads_the_language_of_the_browser_at_the_same_address(client, host):
    url = reverse("tenants:signup")
    chinese = client.get(url, **CHINESE)
    english = client.get(url, **ENGLISH)
    assert "免费获取您的虚拟SIP服务器" in chinese.content.decode()
    assert chinese["Content-Language"] == "zh-hans"
    assert "Get your free virtual SIP server" in english.content.decode()
    assert english["Content-Language"] == "en"


def test_without_accept_language_a_visitor_reads_chinese(client, host, settings):
    settings.LANGUAGE_CODE = "zh-hans"  # production's default (config/settings/base.py)
    html = client.get(reverse("login")).content.decode()
    assert '<html lang="zh-hans">' in html and "忘记密码？" in html


def has_switcher(html: str) -> bool:
    return 'class="language-switcher"' in html and ">简体中文</button>" in html


@pytest.mark.parametrize("name", ["login", "tenants:signup", "password_reset"])
def test_every_public_page_has_the_language_switcher(client, host, name):
    assert has_switcher(client.get(reverse(name)).content.decode())


def test_member_and_operator_pages_have_the_language_switcher(owner_client, operator_client):
    assert has_switcher(owner_client.get(reverse("tenants:server-list")).content.decode())
    assert has_switcher(owner_client.get(reverse("tenants:account")).content.decode())
    assert has_switcher(operator_client.get(reverse("admin:index")).content.decode())


def test_signup_in_chinese_keeps_the_language_and_the_browser_zone(client, host):
    html = signup(client, time_zone="America/New_York").content.decode()
    assert "您的SIP服务器已就绪" in html
    user = User.objects.get()
    tenant = Tenant.objects.get()
    assert (user.language, tenant.time_zone) == ("zh-hans", "America/New_York")
    assert VirtualServer.objects.get().name == "上海云通信有限公司 SIP服务器"
    [message] = mail.outbox
    assert message.subject == "验证您的 sipcloud 电子邮件地址"
    assert "请通过以下链接确认您的电子邮件地址" in message.body


def test_a_signup_without_the_browser_zone_gets_the_default_zone(client, host, settings):
    settings.SIPCLOUD_DEFAULT_TIME_ZONE = "Asia/Shanghai"
    signup(client, time_zone="")
    assert Tenant.objects.get().time_zone == "Asia/Shanghai"


def test_a_zone_zoneinfo_does_not_know_is_refused(client, host):
    html = signup(client, time_zone="Mars/Olympus_Mons").content.decode()
    assert "Mars/Olympus_Mons 不是可识别的时区。" in html
    assert not Tenant.objects.exists()


def test_a_chinese_validation_error(client, host):
    html = signup(client, accept_terms="").content.decode()
    assert "您必须接受免费版的非商业用途条款。" in html


def test_the_switcher_sets_the_language_and_keeps_a_members_choice(owner_client, tenant_a):
    member = User.objects.get(memberships__tenant=tenant_a.tenant)
    server_url = tenant_a.server.get_absolute_url()
    response = owner_client.post(
        reverse("tenants:set-language"), {"language": "en", "next": server_url}, **CHINESE
    )
    assert response.status_code == 302 and response["Location"] == server_url
    member.refresh_from_db()
    assert member.language == "en"
    # The profile wins over the browser, in a browser with no cookie too.
    owner_client.cookies.clear()
    owner_client.force_login(member)
    assert "Local users" in owner_client.get(server_url, **CHINESE).content.decode()

    owner_client.post(reverse("tenants:set-language"), {"language": "zh-hans", "next": "/"})
    html = owner_client.get(server_url, **ENGLISH).content.decode()
    assert "本地用户" in html and "已注册 0 个客户端，上限 5 个" in html


def test_a_visitors_choice_is_kept_in_a_cookie(client, host):
    client.post(reverse("tenants:set-language"), {"language": "zh-hans", "next": "/"}, **ENGLISH)
    assert "免费获取您的虚拟SIP服务器" in client.get(reverse("tenants:signup")).content.decode()


def test_the_password_reset_mail_is_in_the_members_language(client, host):
    User.objects.create_user("wang@example.cn", "wang@example.cn", "x" * 12, language="zh-hans")
    client.post(reverse("password_reset"), {"email": "wang@example.cn"}, **ENGLISH)
    [message] = mail.outbox
    assert message.subject == "重置您的 sipcloud 密码"
    assert "如果是您本人，请在此设置新密码" in message.body


def test_times_are_on_the_tenants_clock_with_the_zone_named(owner_client, tenant_a):
    VirtualServer.objects.filter(pk=tenant_a.server.pk).update(
        created_at=CREATED, state_checked_at=CREATED
    )
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "2026-09-21 16:53:20 Asia/Shanghai" in html  # the default zone, UTC+8
    assert re.search(r'id="created-at">2026-09-21 16:53:20 Asia/Shanghai<', html)

    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(time_zone="Europe/Berlin")
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "read from the host" in html and "at 2026-09-21 10:53:20 Europe/Berlin" in html
    assert VirtualServer.objects.get(pk=tenant_a.server.pk).created_at == CREATED  # still UTC


def test_an_owner_changes_the_zone_and_a_viewer_cannot(client, tenant_a):
    url = reverse("tenants:account")
    client.force_login(make_member(tenant_a.tenant, "owner"))
    response = client.post(url, {"time_zone": "America/Los_Angeles"}, follow=True)
    assert "Account settings saved." in response.content.decode()
    assert Tenant.objects.get(pk=tenant_a.tenant.pk).time_zone == "America/Los_Angeles"
    assert (
        "Select a valid choice" in client.post(url, {"time_zone": "Nowhere/City"}).content.decode()
    )

    client.force_login(make_member(tenant_a.tenant, "viewer"))
    assert "America/Los_Angeles" in client.get(url).content.decode()
    assert client.post(url, {"time_zone": "UTC"}).status_code == 403
    assert Tenant.objects.get(pk=tenant_a.tenant.pk).time_zone == "America/Los_Angeles"


def test_chinese_display_names_are_kept_shown_and_found(owner_client, operator_client, tenant_a):
    user = tenant_a.user
    owner_client.post(
        reverse("tenants:user-edit", args=[tenant_a.server.pk, user.pk]),
        {"display_name": "张伟 (前台)", "call_level": 1},
    )
    assert LocalUser.objects.get(pk=user.pk).display_name == "张伟 (前台)"
    assert "张伟 (前台)" in owner_client.get(tenant_a.server.get_absolute_url()).content.decode()

    found = operator_client.get(reverse("admin:sipnodes_localuser_changelist"), {"q": "张伟"})
    assert "张伟 (前台)" in found.content.decode()


def test_operators_search_tenants_by_chinese_name(operator_client, host):
    Tenant.objects.create(name="北京某某科技有限公司")
    Tenant.objects.create(name="Acme")
    found = operator_client.get(reverse("admin:tenants_tenant_changelist"), {"q": "某某科技"})
    html = found.content.decode()
    assert "北京某某科技有限公司" in html and "Acme" not in html


def test_operator_pages_name_their_zone_and_switch_language(operator_client, host):
    SipHost.objects.filter(pk=host.pk).update(last_seen_at=CREATED)
    url = reverse("admin:sipnodes_siphost_changelist")
    html = operator_client.get(url).content.decode()
    assert "Times in UTC" in html and "no report since 2026-09-21 08:53:20 UTC" in html
    html = operator_client.get(url, **CHINESE).content.decode()
    assert "时间均为 UTC 时区" in html and "自 2026-09-21 08:53:20 UTC 起无上报" in html


def test_portal_messages_and_choices_in_chinese(owner_client, tenant_a):
    server = tenant_a.server
    response = owner_client.post(
        reverse("tenants:server-power", args=[server.pk, "stop"]), follow=True, **CHINESE
    )
    html = response.content.decode()
    assert f"已请求主机停止 {server.name}。" in html
    assert "5 个客户端（免费版）" in html and "仅限非商业用途" in html
    sipnode_services.server_update_settings(server=server, digest_algorithms="sha256")
    html = owner_client.get(server.get_absolute_url(), **CHINESE).content.decode()
    assert "仅 SHA-256" in html


def test_error_pages_are_translated(owner_client, tenant_b):
    response = owner_client.get(tenant_b.server.get_absolute_url(), **CHINESE)
    assert response.status_code == 404
    assert "此地址没有内容，或者它属于另一个账户。" in response.content.decode()
