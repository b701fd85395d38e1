"""The FCI in plain words: every callTag the engine defines and every cause it can give
has a meaning, in English and Chinese, taken from the engine where the engine has one."""

import pytest
from django.utils import translation

from sipnodes.cdr_texts import Q850_CAUSES, call_tag_text, cause_text
from sipnodes.engine import cdr
from sipnodes.engine.cdr import STATUS_TO_CAUSE, CallTag
from sipnodes.management.commands.makemessages import call_tag_entries

ENGINE_CAUSES = set(STATUS_TO_CAUSE.values()) | {
    value for name, value in vars(cdr).items() if name.isupper() and isinstance(value, int)
}


def test_every_cause_the_engine_gives_has_a_q850_name():
    assert ENGINE_CAUSES - set(Q850_CAUSES) == set()


@pytest.mark.parametrize("tag", list(CallTag))
def test_each_call_tag_means_its_engine_docstring_in_both_languages(tag):
    assert tag.__doc__ and call_tag_text(tag.value) == tag.__doc__
    with translation.override("zh-hans"):
        chinese = call_tag_text(tag.value)
    assert chinese != tag.__doc__ and any("\u4e00" <= ch <= "\u9fff" for ch in chinese)
    assert f'msgid "{tag.__doc__}"' in call_tag_entries()  # what makemessages collects


@pytest.mark.parametrize("cause", sorted(ENGINE_CAUSES))
def test_each_engine_cause_reads_in_chinese(cause):
    with translation.override("zh-hans"):
        assert any("\u4e00" <= ch <= "\u9fff" for ch in cause_text(cause))


def test_unknown_values_say_so():
    assert call_tag_text(9999).startswith("Unknown callTag")
    assert call_tag_text(None).startswith("Unknown callTag")
    assert cause_text(126) == "Cause not defined by Q.850"
