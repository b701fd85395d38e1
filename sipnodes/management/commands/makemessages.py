"""`makemessages` that also collects the engine's callTag meanings for translation.

The worker (`sipnodes/engine/`) imports no Django, so its `CallTag` docstrings carry no
gettext marks; the portal shows them translated (`sipnodes.cdr_texts.call_tag_text`).
Rather than a second copy of them in the portal, this adds each docstring to the
`django` template catalogue before it is merged into the languages' catalogues.
"""

from typing import Any

from django.core.management.commands import makemessages

from sipnodes.engine.cdr import CallTag

SOURCE = "sipnodes/engine/cdr.py"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def call_tag_entries() -> str:
    """The docstring of every CallTag as an entry of a .pot file."""
    return "".join(
        f"\n#. callTag {tag.value} ({tag.name}), shown beside a CDR's FCI\n"
        f'#: {SOURCE}\nmsgid {_quoted(tag.__doc__ or "")}\nmsgstr ""\n'
        for tag in CallTag
        if tag.__doc__
    )


class Command(makemessages.Command):
    def build_potfiles(self) -> Any:
        potfiles = super().build_potfiles()
        if self.domain == "django":
            for potfile in set(potfiles):  # the project's locale/ may be listed twice
                with open(potfile, "a", encoding="utf-8") as pot:
                    pot.write(call_tag_entries())
        return potfiles
