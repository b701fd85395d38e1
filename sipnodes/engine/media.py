"""The seam where the media relay will plug in (a later issue).

The B2BUA hands every SDP body crossing from one leg to the other to
`MediaSession.rewrite`; with relay off the body passes untouched (SPEC:
"With relay off, SDP passes untouched").
"""

from __future__ import annotations

from typing import Protocol


class Media(Protocol):
    def rewrite(self, call_uuid: str, towards: str, body: bytes) -> bytes:
        """SDP body to send towards the "O" (caller) or "T" (callee) leg."""
        ...

    def release(self, call_uuid: str) -> None:
        """The call ended: free its ports."""
        ...


class PassThrough:
    """No relay: media flows end to end."""

    def rewrite(self, call_uuid: str, towards: str, body: bytes) -> bytes:
        return body

    def release(self, call_uuid: str) -> None:
        return None
