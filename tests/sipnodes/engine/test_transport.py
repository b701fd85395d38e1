import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipnodes.engine.transport import FramingError, StreamFramer

MSG = (
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
    b"To: <sip:x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
)


def test_joined_messages_and_keepalives():
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n" + MSG + MSG + b"\r\n" + MSG[:10]) == [MSG, MSG]
    assert f.feed(MSG[10:]) == [MSG]


@given(st.lists(st.integers(min_value=1, max_value=len(MSG) * 3 - 1), max_size=8))
def test_any_split_gives_the_same_messages(cuts):
    data = MSG * 3
    points = sorted(set(cuts))
    pieces = [data[a:b] for a, b in zip([0] + points, points + [len(data)], strict=False)]
    f = StreamFramer()
    out = []
    for piece in pieces:
        out += f.feed(piece)
    assert out == [MSG, MSG, MSG]


def test_compact_content_length():
    f = StreamFramer()
    msg = MSG.replace(b"Content-Length: 4", b"l: 4")
    assert f.feed(msg) == [msg]


def test_bounded_buffer_and_missing_length():
    with pytest.raises(FramingError):
        StreamFramer(limit=100).feed(b"x" * 101)
    with pytest.raises(FramingError):
        StreamFramer(limit=200).feed(MSG.replace(b"Content-Length: 4", b"Content-Length: 999"))
    with pytest.raises(FramingError):
        StreamFramer().feed(MSG.replace(b"Content-Length: 4\r\n", b""))
