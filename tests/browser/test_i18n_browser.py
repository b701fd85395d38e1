"""A customer whose browser speaks Chinese: signup, welcome, server page and settings in
Chinese, English and back with the switcher, times on the browser's clock."""

import re
from zoneinfo import ZoneInfo

import pytest

from sipnodes.models import VirtualServer
from tenants.models import Tenant, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Not the platform's default zone (Asia/Shanghai): what the page shows comes from the browser.
BROWSER_ZONE = "America/Vancouver"


@pytest.fixture
def chinese_page(browser):
    context = browser.new_context(locale="zh-CN", timezone_id=BROWSER_ZONE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_a_chinese_customer_signs_up_and_switches_language(chinese_page, live_server, host):
    page = chinese_page
    page.goto(f"{live_server.url}/signup/")
    page.get_by_role("heading", name="免费获取您的虚拟SIP服务器").wait_for()
    page.get_by_label("电子邮件地址").fill("han.meimei@example.cn")
    page.get_by_label("密码").fill("a long enough secret 7")
    page.get_by_label("公司名称").fill("杭州声讯科技有限公司")
    page.get_by_label(re.compile("仅限非商业用途")).check()
    page.get_by_role("button", name="创建我的服务器").click()

    page.get_by_role("heading", name="您的SIP服务器已就绪").wait_for()
    assert Tenant.objects.get().time_zone == BROWSER_ZONE
    server = VirtualServer.objects.get()
    assert server.name == "杭州声讯科技有限公司 SIP服务器"
    created = server.created_at.astimezone(ZoneInfo(BROWSER_ZONE))
    shown = f"{created:%Y-%m-%d %H:%M:%S} {BROWSER_ZONE}"
    assert page.locator("#created-at").inner_text() == f"创建于 {shown}。"

    page.get_by_role("link", name="进入我的服务器").click()
    page.get_by_role("heading", name="本地用户").wait_for()
    assert page.locator("#clients").inner_text() == "已注册 0 个客户端，上限 5 个"
    assert page.locator("#created-at").inner_text() == shown

    page.get_by_role("link", name="系统设置").click()
    page.get_by_role("heading", name=f"系统设置 · {server.name}").wait_for()
    assert page.get_by_label("出局呼叫前缀").input_value() == "9"
    settings_url = page.url

    page.get_by_role("button", name="English").click()
    page.get_by_role("heading", name=f"System settings · {server.name}").wait_for()
    assert page.url == settings_url
    assert page.get_by_label("Out-group call prefix").input_value() == "9"
    assert User.objects.get().language == "en"

    page.get_by_role("button", name="简体中文").click()
    page.get_by_role("heading", name=f"系统设置 · {server.name}").wait_for()
    assert page.url == settings_url
    assert User.objects.get().language == "zh-hans"
    page.screenshot(path="var/i18n-settings-page.png", full_page=True)
