"""QEMU decodes every base64 argument with GLib's g_base64_decode(); so does sevd.

Proves the decoder keeps GLib's leniency exactly — characters outside the alphabet are
skipped, a trailing partial group is dropped, and each group of four drops the bytes its
own '=' characters pad, wherever the group is — and that the fast path taken for canonical
base64 gives the same bytes as the character-by-character path.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sevd.commands.sev import g_base64_decode

# (text, what g_base64_decode returns) — worked through g_base64_decode_step() by hand.
VECTORS = [
    ("", b""),
    ("!!", b""),                       # no alphabet characters: zero bytes, not an error
    ("QQ", b""),                       # partial group dropped
    ("QUJ", b""),
    ("QQ==", b"A"),
    ("QUI=", b"AB"),
    ("QUJD", b"ABC"),
    ("QUJD\nREVG\r\n", b"ABCDEF"),     # line breaks skipped
    ("Q U J D", b"ABC"),
    ("QQ==QQ==", b"AA"),               # padding inside the text pads its own group only
    ("QQ=A", b"A\x00"),                # '=' third: the second byte is dropped, not the third
    ("QUJDR", b"ABC"),
    ("====", b"\x00"),
]


@pytest.mark.parametrize(("text", "data"), VECTORS, ids=[repr(t) for t, _ in VECTORS])
def test_glib_vectors(text: str, data: bytes) -> None:
    assert g_base64_decode(text) == data


@given(st.binary(max_size=300))
def test_canonical_round_trip(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert g_base64_decode(text) == data
    # A character outside the alphabet forces the GLib loop: same bytes.
    assert g_base64_decode(text + "!") == data
    assert g_base64_decode("\n".join(text[i:i + 76] for i in range(0, len(text), 76))) == data


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!\n ",
               max_size=64))
def test_fast_path_agrees_with_the_glib_loop(text: str) -> None:
    assert g_base64_decode(text) == g_base64_decode(text + "\x00")
