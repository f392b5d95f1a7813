"""House rules of sevd/domain/psp: what it may import, and that guest keys stay inside."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
from psp_helpers import Guests, Owner, pdh_of

import sevd.domain.psp as psp
from sevd.domain.psp import GuestState, SevError, SevFirmware
from sevd.domain.psp.profiles import PROFILES

PACKAGE = Path(psp.__file__).parent
FORBIDDEN = {"asyncio", "json", "jsonschema", "random", "os.path", "pathlib", "logging"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_imports_only_formats_and_itself(path: Path) -> None:
    for name in _imports(path):
        if name.startswith("sevd"):
            assert name.startswith(("sevd.formats", "sevd.domain.psp")), name
        assert name.split(".")[0] not in FORBIDDEN and name not in FORBIDDEN, name
    text = path.read_text()
    doc = " ".join(text.split('"""')[1].split()).lower()
    assert text.startswith('"""') and "must not import" in doc


def _secret_guest(fw: SevFirmware) -> tuple[int, Owner]:
    owner = Owner(0)
    handle = fw.launch_start(0, dh_cert=owner.godh, session=owner.session(pdh_of(fw)))
    fw.activate(handle, Guests(fw).asid())
    return handle, owner


def test_guest_keys_never_leave(fw: SevFirmware) -> None:
    handle, owner = _secret_guest(fw)
    guest = fw._guests[handle]
    secrets = [guest.vek, guest.tek, guest.tik]
    assert guest.tek == owner.tek and guest.tik == owner.tik
    fw.launch_measure(handle)
    visible = [
        repr(fw),
        repr(guest),
        repr(fw.guest_info(handle)),
        repr(fw.guests()),
        repr(guest.cipher),
        repr(fw._drbg),
        fw.export_identity().hex(),
        repr(fw.stats),
    ]
    try:
        fw.launch_secret(handle, bytes(52), 0, bytes(16))
    except SevError as err:
        visible += [str(err), repr(err)]
    for secret in secrets:
        for text in visible:
            assert secret.hex() not in text and repr(secret) not in text
    assert secrets[0] not in fw.export_identity()


def test_identity_bytes_carry_no_guest_keys(fw: SevFirmware) -> None:
    handle = Guests(fw).in_state(GuestState.RUNNING)
    assert fw._guests[handle].vek not in fw.export_identity()


def test_guest_keys_cannot_be_pickled(fw: SevFirmware) -> None:
    handle = Guests(fw).launch(0)
    for obj in (fw._guests[handle].cipher, fw._guests[handle], fw):
        with pytest.raises((TypeError, pickle.PicklingError)):
            pickle.dumps(obj)


def test_profiles_match_design_table() -> None:
    table = {
        # name: (api, build, cbit, reduction, ecx, edx, es, attestation)
        "naples": ((0, 17), 48, 47, 5, 15, 1, False, False),
        "rome": ((0, 24), 15, 47, 5, 509, 1, True, True),
        "milan": ((1, 51), 3, 51, 5, 509, 100, True, True),
        "genoa": ((1, 55), 21, 51, 5, 509, 451, True, True),
    }
    for name, (api, build, cbit, red, ecx, edx, es, att) in table.items():
        p = PROFILES[name]
        got = (p.api_version, p.build, p.cbitpos, p.phys_addr_reduction)
        assert got == (api, build, cbit, red)
        assert (p.cpuid.ecx, p.cpuid.edx, p.es, p.attestation) == (ecx, edx, es, att)
        assert p.cpuid.eax & 0x3 == 0x3  # SME and SEV
        assert bool(p.cpuid.eax & 0x8) == es  # SEV-ES feature bit
    # Public dumps (reference §13): Rome EBX 0x16f, Milan EBX 0x4173.
    assert PROFILES["rome"].cpuid.ebx == 0x16F and PROFILES["milan"].cpuid.ebx == 0x4173
    milan = PROFILES["milan"]
    assert (milan.es_asids, milan.sev_asids) == (range(1, 100), range(100, 510))
    assert (milan.max_guests, milan.max_es_guests) == (410, 99)
    assert PROFILES["genoa"].max_guests == 59 and PROFILES["genoa"].max_es_guests == 450
