"""The catalogues are complete and current, and no template shows text outside them.

A string added to the code or a template without a Chinese translation, or a template
line of English written outside `{% translate %}`/`{% blocktranslate %}`, fails here.
"""

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.template.base import Lexer, TokenType

from tests.support import require_tool

ROOT = Path(settings.BASE_DIR)
LOCALE = ROOT / "locale"
LANGUAGES = ["zh_Hans", "en"]
# Names that are the same in every language.
UNTRANSLATED_WORDS = {"sipcloud"}
# Attributes a person reads (or hears, with a screen reader).
VISIBLE_ATTRIBUTES = {"title", "placeholder", "alt", "aria-label", "label", "data-confirm"}
BUTTON_INPUT_TYPES = {"submit", "button", "reset"}
TRANSLATION_BLOCKS = {"blocktranslate": "endblocktranslate", "blocktrans": "endblocktrans"}
# Stands in for a template tag or variable: not a letter, so never taken for text.
PLACEHOLDER = "\ue000"
WORD = re.compile(r"[^\W\d_]+")


def msgfmt_statistics(po: Path) -> str:
    result = subprocess.run(
        [require_tool("msgfmt", "gettext"), "--check", "--statistics", "-o", "/dev/null", po],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C"},
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip()


def assert_complete(po: Path) -> None:
    statistics = msgfmt_statistics(po)
    assert re.fullmatch(r"\d+ translated messages?\.", statistics), f"{po}: {statistics}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_catalogue_has_no_untranslated_or_fuzzy_string(language):
    assert_complete(LOCALE / language / "LC_MESSAGES" / "django.po")


def test_the_catalogues_hold_every_string_of_the_sources(tmp_path):
    """makemessages over a copy of the sources adds nothing the catalogues lack."""
    copy = tmp_path / "src"
    copy.mkdir()
    ignore = shutil.ignore_patterns(".*", "__pycache__", "var", "*.mo")
    for name in ["manage.py", "config", "tenants", "sipnodes", "ops", "locale"]:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy(source, copy / name)
    result = subprocess.run(
        [sys.executable, "manage.py", "makemessages", "--add-location=file"]
        + [f"--locale={language}" for language in LANGUAGES],
        cwd=copy,
        env={
            "PATH": f"{Path(require_tool('msgfmt', 'gettext')).parent}",
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "SIPCLOUD_VAR_DIR": str(tmp_path / "var"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for language in LANGUAGES:
        assert_complete(copy / "locale" / language / "LC_MESSAGES" / "django.po")


def test_the_compiled_catalogues_are_current():
    """`make messages` (run by `make run` and `make test`) compiles them; stale ones mislead."""
    for language in LANGUAGES:
        po = LOCALE / language / "LC_MESSAGES" / "django.po"
        mo = po.with_suffix(".mo")
        assert mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime, (
            f"{mo} is missing or older than its .po: run `make messages`"
        )


class VisibleText(HTMLParser):
    """Collects the text a browser shows: element text and the visible attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style"}:
            self._hidden_depth += 1
        values = dict(attrs)
        for name, value in attrs:
            if value and (
                name in VISIBLE_ATTRIBUTES
                or (name == "value" and values.get("type") in BUTTON_INPUT_TYPES)
            ):
                self.texts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"}:
            self._hidden_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.texts.append(data)


def untranslated_text(source: str) -> list[str]:
    """Text of a template a reader would see that no translation tag covers."""
    parts = []
    closing = None
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            tag = token.contents.split()[0]
            if closing is None and tag in TRANSLATION_BLOCKS:
                closing = TRANSLATION_BLOCKS[tag]
            elif tag == closing:
                closing = None
            parts.append(PLACEHOLDER)
        elif closing is not None or token.token_type == TokenType.COMMENT:
            continue
        elif token.token_type == TokenType.VAR:
            parts.append(PLACEHOLDER)
        else:
            parts.append(token.contents)
    parser = VisibleText()
    parser.feed("".join(parts))
    parser.close()
    texts = (re.sub(rf"[\s{PLACEHOLDER}]+", " ", text).strip() for text in parser.texts)
    return [text for text in texts if not set(WORD.findall(text)) <= UNTRANSLATED_WORDS]


def project_templates() -> list[Path]:
    """Every template of the project: the site's own and each of its apps' (not Django's)."""
    folders = [Path(folder) for folder in settings.TEMPLATES[0]["DIRS"]]
    for app in apps.get_app_configs():
        path = Path(app.path)
        if path.is_relative_to(ROOT) and "site-packages" not in path.parts:
            folders.append(path / "templates")
    return sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())


def test_the_template_checker_finds_text_outside_translation_tags():
    assert untranslated_text("<p>Hello</p>") == ["Hello"]
    assert untranslated_text('<a title="Go on">{% translate "Next" %}</a>') == ["Go on"]
    assert untranslated_text('<input type="submit" value="Save">') == ["Save"]
    assert untranslated_text("{% blocktranslate %}Hi {{ name }}{% endblocktranslate %}") == []
    assert untranslated_text("<b>{{ server.name }}</b> · 5-9 sipcloud") == []
    assert untranslated_text("<script>go('home')</script>{# a note #}") == []
    assert untranslated_text("<p>{% if x %}你好{% endif %}</p>") == ["你好"]


def test_no_template_shows_text_outside_translation_tags():
    templates = project_templates()
    assert ROOT / "tenants/templates/tenants/signup.html" in templates
    found = {
        str(path.relative_to(ROOT)): text
        for path in templates
        if (text := untranslated_text(path.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize(
    ("lang", "created"), [("zh_CN.UTF-8", "：已创建"), ("C.UTF-8", ": created"), ("", ": created")]
)
def test_the_bootstrap_command_speaks_the_language_of_the_shell(
    db, capsys, monkeypatch, lang, created
):
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", lang)
    call_command("bootstrap")
    assert created in capsys.readouterr().out.splitlines()[0]
