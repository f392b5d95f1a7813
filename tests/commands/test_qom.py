"""QOM introspection as libvirt probes it: sev-guest is listed (QEMU_CAPS_SEV_GUEST), its
properties include kernel-hashes (QEMU_CAPS_SEV_GUEST_KERNEL_HASHES), abstract types only
on request, and QEMU's text for an unknown class. Through the real dispatcher, so argument
checking and reply validation apply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sevd.commands.app import App
from sevd.commands.registry import GUEST, Dispatcher
from sevd.commands.schema import Schema
from sevd.domain.guest import Guest, GuestConfig
from sevd.protocol.errors import QmpError


@pytest.fixture(scope="module")
def dispatcher() -> Dispatcher:
    app = App(Schema(), validate_returns=True)
    guest = Guest(GuestConfig(name="vm1"))
    guest.attach(None, 51)
    return Dispatcher(app, GUEST, guest)


def call(d: Dispatcher, name: str, args: dict[str, Any] | None = None) -> Any:
    result = d.dispatch(None, name, args, False)
    assert isinstance(result, str)
    return json.loads(result)


def test_sev_guest_is_listed_as_libvirt_expects(dispatcher: Dispatcher) -> None:
    names = [t["name"] for t in call(dispatcher, "qom-list-types")]
    assert "sev-guest" in names and "sev-common" not in names
    assert {"name": "sev-guest", "parent": "sev-common"} in call(dispatcher, "qom-list-types")


def test_abstract_and_implements(dispatcher: Dispatcher) -> None:
    everything = call(dispatcher, "qom-list-types", {"abstract": True})
    assert {"name": "sev-common", "abstract": True, "parent": "x86-confidential-guest"} \
        in everything
    cgs = call(dispatcher, "qom-list-types", {"implements": "confidential-guest-support",
                                              "abstract": True})
    assert [t["name"] for t in cgs] == ["confidential-guest-support", "x86-confidential-guest",
                                        "sev-common", "sev-guest"]
    assert call(dispatcher, "qom-list-types", {"implements": "no-such-type"}) == []


def test_sev_guest_properties(dispatcher: Dispatcher) -> None:
    props = {p["name"]: p["type"]
             for p in call(dispatcher, "qom-list-properties", {"typename": "sev-guest"})}
    assert props["kernel-hashes"] == "bool"
    assert props["cbitpos"] == props["reduced-phys-bits"] == props["policy"] == "uint32"
    assert props["dh-cert-file"] == props["session-file"] == "string"
    assert props["type"] == "string"


def test_unknown_class_and_argument_errors(dispatcher: Dispatcher) -> None:
    with pytest.raises(QmpError) as e:
        call(dispatcher, "qom-list-properties", {"typename": "nope"})
    assert (e.value.cls, e.value.desc) == ("GenericError", "Class 'nope' not found")
    with pytest.raises(QmpError) as e:
        call(dispatcher, "qom-list-properties", {})
    assert e.value.desc == "Parameter 'typename' is missing"
