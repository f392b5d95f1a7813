"""sevd.formats.secret: LAUNCH_SECRET packets and the OVMF secret table (sevctl vectors)."""

from __future__ import annotations

import base64
import os
import struct
import uuid
from collections.abc import Callable

import pytest

from sevd.formats.secret import (
    CONTEXT_DATA,
    SECRET_HEADER_LEN,
    SECRET_TABLE_GUID,
    SecretHeader,
    build_secret_table,
    decrypt_packet,
    encrypt_packet,
    encrypt_secret,
    open_secret,
    packet_mac,
    parse_secret_table,
    secret_mac,
)

Data = Callable[[str], bytes]

# virtee/sevctl tests/secretbuild.rs `secret_build()` stdargs.
LAUNCH_MEASURE_BLOB = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS"
IV = base64.b64decode("rFR07U3TLH2YnsUj2SVZ7A==")
GUID1 = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
GUID2 = uuid.UUID("736869e5-aaaa-4973-92ec-06879ce3da0b")


def _build(data: Data, secrets: dict[uuid.UUID, bytes]) -> tuple[str, str]:
    tek = data("virtee-sevctl/secret/tek1.bin")
    tik = data("virtee-sevctl/secret/tik1.bin")
    measure = base64.b64decode(LAUNCH_MEASURE_BLOB)[:32]
    header, payload = encrypt_secret(tek, tik, IV, build_secret_table(secrets), measure)
    return base64.b64encode(header.to_bytes()).decode(), base64.b64encode(payload).decode()


def test_sevctl_single_secret_vector(data: Data) -> None:
    # "Full test": --secret 736869e5-84f0-4973-92ec-06879ce3da0b:secret1.txt
    header, payload = _build(data, {GUID1: data("virtee-sevctl/secret/secret1.txt")})
    assert header == "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
    assert payload == (
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA=="
    )


def test_sevctl_multi_secret_vector(data: Data) -> None:
    # "Test multi secret injection": secret1.txt then secret2.txt.
    header, payload = _build(
        data,
        {
            GUID1: data("virtee-sevctl/secret/secret1.txt"),
            GUID2: data("virtee-sevctl/secret/secret2.txt"),
        },
    )
    assert header == "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng=="
    assert payload == (
        "0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332lpLNU"
        "X1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe"
    )


def test_sevctl_maximum_secret_padding() -> None:
    # "Test maximum secret size and proper padding": 16343- and 16344-byte secrets both give
    # a 16384-byte payload (16 + 4 + (16 + 4 + pad(n))).
    guid = uuid.UUID("23058844-597b-42fb-8259-a0f5d9d495af")
    t1 = build_secret_table({guid: b"x" * 16343})
    t2 = build_secret_table({guid: b"x" * 16344})
    assert len(t1) == len(t2) == 16384


def test_secret_table_layout() -> None:
    table = build_secret_table({GUID1: b"abc"})
    # reference §8.5: GUID_le || LE32(20 + entries) || GUID_le || LE32(20 + len) || data, pad 16
    assert table[:16] == SECRET_TABLE_GUID.bytes_le
    assert struct.unpack_from("<I", table, 16) == (20 + 23,)
    assert table[20:36] == GUID1.bytes_le
    assert struct.unpack_from("<I", table, 36) == (23,)
    assert table[40:43] == b"abc"
    assert len(table) == 48 and table[43:] == bytes(5)
    assert parse_secret_table(table) == {GUID1: b"abc"}
    assert parse_secret_table(build_secret_table({})) == {}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: b"\x00" + t[1:], "header GUID"),
        (lambda t: t[:16] + struct.pack("<I", 999) + t[20:], "does not fit"),
        (lambda t: t[:36] + struct.pack("<I", 3) + t[40:], "invalid length"),
        (lambda t: t[:10], "shorter"),
    ],
)
def test_secret_table_parse_errors(mutate: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_secret_table(mutate(build_secret_table({GUID1: b"abc"})))


def test_header_layout() -> None:
    header = SecretHeader(1, b"I" * 16, b"M" * 32)
    raw = header.to_bytes()
    assert len(raw) == SECRET_HEADER_LEN
    assert raw == b"\x01\x00\x00\x00" + b"I" * 16 + b"M" * 32
    assert SecretHeader.from_bytes(raw) == header and header.compressed
    with pytest.raises(ValueError, match="52 bytes"):
        SecretHeader.from_bytes(raw + b"\x00")


def test_secret_mac_input() -> None:
    # reference §8.5: HMAC(TIK, 0x01 || LE32 flags || IV || LE32 glen || LE32 tlen || ct || M)
    from sevd.formats.crypto import hmac_sha256

    tik, iv, ct, m = b"t" * 16, b"i" * 16, b"c" * 32, b"m" * 32
    expected = hmac_sha256(
        tik, b"\x01", bytes(4), iv, b"\x20\x00\x00\x00", b"\x20\x00\x00\x00", ct, m
    )
    assert secret_mac(tik, 0, iv, 32, 32, ct, m) == expected
    with pytest.raises(ValueError, match="32-byte MEASURE"):
        secret_mac(tik, 0, iv, 32, 32, ct, m + bytes(16))


def test_firmware_side_opens_secret() -> None:
    tek, tik, iv, measure = (os.urandom(n) for n in (16, 16, 16, 32))
    plaintext = build_secret_table({GUID1: b"passphrase"})
    header, ct = encrypt_secret(tek, tik, iv, plaintext, measure)
    assert open_secret(tek, tik, header, ct, measure) == plaintext
    with pytest.raises(ValueError, match="mac"):
        open_secret(tek, tik, header, ct, os.urandom(32))
    with pytest.raises(ValueError, match="mac"):
        open_secret(tek, tik, header, ct, measure, guest_length=len(ct) + 16)


def test_transport_packets_use_context_2() -> None:
    tek, tik, iv = os.urandom(16), os.urandom(16), os.urandom(16)
    header, ct = encrypt_packet(tek, tik, iv, b"page" * 1024)
    assert header.mac == packet_mac(tik, CONTEXT_DATA, 0, iv, 4096, 4096, ct)
    assert decrypt_packet(tek, tik, header, ct) == b"page" * 1024
    with pytest.raises(ValueError, match="mac"):
        decrypt_packet(tek, tik, header, ct, context=0x01)
