"""BTP URL parsing and redaction."""

from __future__ import annotations

import pytest

from ilp.btp.url import BtpUrl, parse_btp_url


@pytest.mark.parametrize(
    ("url", "ws_url", "username", "token"),
    [
        ("btp+ws://alice:secret@127.0.0.1:7768", "ws://127.0.0.1:7768", "alice", "secret"),
        ("btp+ws://:secret@127.0.0.1:7768", "ws://127.0.0.1:7768", "", "secret"),
        (
            "btp+wss://bob:p%40ss%3Aw@example.com/ilp/btp",
            "wss://example.com/ilp/btp",
            "bob",
            "p@ss:w",
        ),
        ("btp+ws://user@host:1/a?b=c", "ws://host:1/a?b=c", "user", ""),
        ("btp+ws://127.0.0.1:7768", "ws://127.0.0.1:7768", "", ""),
        ("BTP+WS://a:b@[::1]:80/", "ws://[::1]:80/", "a", "b"),
        ("ws://127.0.0.1:9", "ws://127.0.0.1:9", "", ""),
        ("btp+ws://%C3%A9:tok3n@h", "ws://h", "é", "tok3n"),
    ],
)
def test_parse(url: str, ws_url: str, username: str, token: str) -> None:
    parsed = parse_btp_url(url)
    assert parsed == BtpUrl(ws_url, username, token)
    assert parsed.redacted() == ws_url
    assert str(parsed) == ws_url
    if token:
        assert token not in repr(parsed)
        assert token not in parsed.redacted()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://a:secret@host", "btp\\+ws://"),
        ("btp+ws://:secret@", "needs a host"),
        ("btp+ws://a:secret@host:99999", "invalid BTP URL"),
        ("secret", "btp\\+ws://"),
    ],
)
def test_invalid(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_btp_url(url)
    assert "secret" not in str(info.value)
