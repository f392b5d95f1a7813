"""sevowner.secret: LAUNCH_SECRET packets as virtee's ``sevctl secret build`` makes them."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable

import pytest
from sevowner.secret import MAX_SECRET_LEN, build_launch_secret

from sevd.formats.secret import SecretHeader, open_secret, parse_secret_table

Data = Callable[[str], bytes]
BLOB = base64.b64decode("TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS")
IV = base64.b64decode("rFR07U3TLH2YnsUj2SVZ7A==")
GUID1 = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")


def test_sevctl_vector(data: Data) -> None:
    # virtee/sevctl tests/secretbuild.rs "Full test".
    packet = build_launch_secret(
        data("virtee-sevctl/secret/tek1.bin"),
        data("virtee-sevctl/secret/tik1.bin"),
        BLOB,
        {GUID1: data("virtee-sevctl/secret/secret1.txt")},
        iv=IV,
    )
    assert packet.header_b64 == (
        "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
    )
    assert packet.payload_b64 == (
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA=="
    )
    # The 32-byte MEASURE alone gives the same packet.
    same = build_launch_secret(
        data("virtee-sevctl/secret/tek1.bin"),
        data("virtee-sevctl/secret/tik1.bin"),
        BLOB[:32],
        {GUID1: data("virtee-sevctl/secret/secret1.txt")},
        iv=IV,
    )
    assert same == packet


def test_firmware_opens_it_and_qmp_arguments() -> None:
    tek, tik, blob = os.urandom(16), os.urandom(16), os.urandom(48)
    secrets = {GUID1: b"disk passphrase", uuid.uuid4(): b"\x00\x01"}
    packet = build_launch_secret(tek, tik, blob, secrets)
    plaintext = open_secret(
        tek, tik, SecretHeader.from_bytes(packet.header), packet.payload, blob[:32]
    )
    assert parse_secret_table(plaintext) == secrets
    assert packet.qmp_arguments() == {
        "packet-header": packet.header_b64,
        "secret": packet.payload_b64,
    }
    assert packet.qmp_arguments(gpa=0x810000)["gpa"] == 0x810000
    # A random IV each time.
    assert build_launch_secret(tek, tik, blob, secrets).header[4:20] != packet.header[4:20]


def test_limits() -> None:
    with pytest.raises(ValueError, match="48"):
        build_launch_secret(bytes(16), bytes(16), bytes(40), {})
    with pytest.raises(ValueError, match="at most"):
        build_launch_secret(bytes(16), bytes(16), bytes(48), {GUID1: bytes(MAX_SECRET_LEN)})
    with pytest.raises(ValueError, match="IV"):
        build_launch_secret(bytes(16), bytes(16), bytes(48), {}, iv=bytes(8))
