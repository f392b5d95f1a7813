"""SEND_* / RECEIVE_* between two simulated hosts."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from psp_helpers import Guests, pdh_of

from sevd.domain.psp import (
    GuestState,
    PlatformIdentity,
    SevError,
    SevFirmware,
    SevStatus,
    SparsePageStore,
)
from sevd.domain.psp.identity import AmdRoots, generate

PAGE = 4096
MEM = 64 * PAGE


def _full_chain(fw: SevFirmware) -> tuple[bytes, bytes, bytes]:
    """What a sender needs about a target: PDH, PEK‖OCA‖CEK(signed), ASK‖ARK."""
    pdh, chain = fw.pdh_cert_export()
    return pdh, chain[: 2 * 2084] + fw.kds_cek(), fw.amd_root_chain()


def _running_guest(fw: SevFirmware, policy: int) -> tuple[int, bytes]:
    memory = SparsePageStore(MEM)
    handle = Guests(fw).launch(policy, memory=memory)
    image = os.urandom(8 * PAGE)
    memory.write(0, image)
    fw.launch_update_data(handle, 0, len(image))
    fw.launch_measure(handle)
    fw.launch_finish(handle)
    fw.cpu_write(handle, 16 * PAGE + 32, b"written while running")
    return handle, image


def _migrate(
    src: SevFirmware, dst: SevFirmware, handle: int, target: tuple[bytes, bytes, bytes]
) -> int:
    policy = src.guest_info(handle).policy
    start = src.send_start(handle, *target)
    assert start.policy == policy
    new_mem = SparsePageStore(MEM)
    new = dst.receive_start(pdh_of(src), start.session, policy, memory=new_mem)
    dst.activate(new, next(iter(dst.profile.sev_asids)))
    for pfn in src._guests[handle].memory.present_pages():
        header, packet = src.send_update_data(handle, pfn * PAGE, PAGE)
        assert len(header) == 52 and len(packet) == PAGE
        dst.receive_update_data(new, header, pfn * PAGE, packet)
    src.send_finish(handle)
    dst.receive_finish(new)
    return new


@pytest.fixture
def pair(
    amd_roots: Callable[[int], AmdRoots], identity: PlatformIdentity
) -> tuple[SevFirmware, SevFirmware]:
    from psp_helpers import ready

    other = generate("milan", b"the other host", amd_roots(4096))
    return ready(SevFirmware(identity, seed=b"src")), ready(SevFirmware(other, seed=b"dst"))


def test_migration_moves_memory(pair: tuple[SevFirmware, SevFirmware]) -> None:
    src, dst = pair
    handle, image = _running_guest(src, 0x0)
    new = _migrate(src, dst, handle, _full_chain(dst))
    assert src.guest_info(handle).state is GuestState.SENT
    info = dst.guest_info(new)
    assert (info.state, info.active, info.policy) == (GuestState.RUNNING, True, 0)
    assert dst.cpu_read(new, 0, len(image)) == image
    assert dst.cpu_read(new, 16 * PAGE + 32, 21) == b"written while running"
    # Re-encrypted under the new host's VEK: the stored bytes differ.
    assert dst._guests[new].memory.read(0, PAGE) != src._guests[handle].memory.read(0, PAGE)
    # The channel keys are gone on both sides.
    assert src._guests[handle].tek == bytes(16) == dst._guests[new].tek


def test_sev_policy_migrates_within_the_simulated_root(
    pair: tuple[SevFirmware, SevFirmware],
) -> None:
    src, dst = pair
    handle, image = _running_guest(src, 0x20 | 0x33_01_0000)  # SEV, API >= 1.51
    new = _migrate(src, dst, handle, _full_chain(dst))
    assert dst.cpu_read(new, 0, PAGE) == image[:PAGE]


def test_sev_policy_checks_the_chain_and_version(
    pair: tuple[SevFirmware, SevFirmware], make_fw: Callable[..., SevFirmware]
) -> None:
    src, dst = pair
    pdh, plat, amd = _full_chain(dst)

    def status(handle: int, *args: object) -> SevStatus | int:
        try:
            src.send_start(handle, *args)  # type: ignore[arg-type]
        except SevError as err:
            return err.status
        return SevStatus.SUCCESS

    h, _ = _running_guest(src, 0x20)
    assert status(h, pdh) == SevStatus.INVALID_LENGTH  # no chain given
    assert status(h, pdh, plat, amd[:-1]) == SevStatus.INVALID_LENGTH
    unsigned_cek = dst.pdh_cert_export()[1]
    assert status(h, pdh, unsigned_cek, amd) == SevStatus.INVALID_CERTIFICATE
    forged = bytearray(amd)
    forged[-1] ^= 1  # the ARK's self-signature
    assert status(h, pdh, plat, bytes(forged)) == SevStatus.BAD_SIGNATURE
    # A chain to another root (here the Naples-sized one) is not the genuine ARK.
    foreign = make_fw("naples").amd_root_chain()
    assert status(h, pdh, plat, foreign) == SevStatus.INVALID_CERTIFICATE
    # The target PEK's API version must satisfy the policy's minimum.
    h2, _ = _running_guest(src, 0x20 | 0x34_01_0000)  # needs 1.52
    assert status(h2, pdh, plat, amd) == SevStatus.POLICY_FAILURE
    assert status(h, pdh, plat, amd) == SevStatus.SUCCESS


def test_nosend_and_domain(pair: tuple[SevFirmware, SevFirmware]) -> None:
    src, dst = pair
    h, _ = _running_guest(src, 0x8)
    with pytest.raises(SevError) as err:
        src.send_start(h, pdh_of(dst))
    assert err.value.status is SevStatus.POLICY_FAILURE
    h, _ = _running_guest(src, 0x10)
    pdh, plat, _amd = _full_chain(dst)
    with pytest.raises(SevError) as err:
        src.send_start(h, pdh, plat)  # another OCA
    assert err.value.status is SevStatus.POLICY_FAILURE
    own_pdh, own_plat, _ = _full_chain(src)
    src.send_start(h, own_pdh, own_plat)  # same OCA: allowed


def test_send_start_length_query(pair: tuple[SevFirmware, SevFirmware]) -> None:
    src, dst = pair
    h, _ = _running_guest(src, 0)
    with pytest.raises(SevError) as err:
        src.send_start(h, pdh_of(dst), session_len=0)
    assert err.value.status is SevStatus.INVALID_LENGTH and err.value.required_length == 128
    start = src.send_start(h, pdh_of(dst))
    with pytest.raises(SevError) as err:
        src.send_update_data(h, 0, 16, hdr_len=0)
    assert err.value.required_length == 52
    src.send_cancel(h)
    assert src.guest_info(h).state is GuestState.RUNNING
    assert len(start.session) == 128


def test_tampered_packet_is_bad_measurement(pair: tuple[SevFirmware, SevFirmware]) -> None:
    src, dst = pair
    h, _ = _running_guest(src, 0)
    start = src.send_start(h, pdh_of(dst))
    new = dst.receive_start(pdh_of(src), start.session, 0)
    dst.activate(new, 100)
    header, packet = src.send_update_data(h, 0, 64)
    for bad_header, bad_packet in (
        (header[:20] + bytes([header[20] ^ 1]) + header[21:], packet),
        (header, packet[:-1] + bytes([packet[-1] ^ 1])),
    ):
        with pytest.raises(SevError) as err:
            dst.receive_update_data(new, bad_header, 0, bad_packet)
        assert err.value.status is SevStatus.BAD_MEASUREMENT
    compressed = b"\x01" + header[1:]
    with pytest.raises(SevError) as err:
        dst.receive_update_data(new, compressed, 0, packet)
    assert err.value.status is SevStatus.UNSUPPORTED
    dst.receive_update_data(new, header, 0, packet)


def test_receive_start_with_wrong_policy_or_pdh(pair: tuple[SevFirmware, SevFirmware]) -> None:
    src, dst = pair
    h, _ = _running_guest(src, 0)
    start = src.send_start(h, pdh_of(dst))
    with pytest.raises(SevError) as err:
        dst.receive_start(pdh_of(src), start.session, 0x1)
    assert err.value.status is SevStatus.BAD_MEASUREMENT
    with pytest.raises(SevError) as err:
        dst.receive_start(pdh_of(dst), start.session, 0)
    assert err.value.status is SevStatus.BAD_MEASUREMENT
    with pytest.raises(SevError) as err:
        dst.receive_start(pdh_of(src), start.session[:100], 0)
    assert err.value.status is SevStatus.INVALID_LENGTH


@pytest.mark.parametrize(
    ("gpa", "length", "trans_len", "status"),
    [
        (8, 16, None, SevStatus.INVALID_ADDRESS),
        (0, 0, None, SevStatus.INVALID_LENGTH),
        (0, 24, None, SevStatus.INVALID_LENGTH),
        (0, 0x5010, None, SevStatus.INVALID_LENGTH),
        (0, 32, 16, SevStatus.INVALID_LENGTH),
    ],
)
def test_send_update_checks(
    pair: tuple[SevFirmware, SevFirmware],
    gpa: int,
    length: int,
    trans_len: int | None,
    status: SevStatus,
) -> None:
    src, dst = pair
    h, _ = _running_guest(src, 0)
    src.send_start(h, pdh_of(dst))
    with pytest.raises(SevError) as err:
        src.send_update_data(h, gpa, length, trans_len)
    assert err.value.status is status


def test_es_guest_vmsa_migration(
    amd_roots: Callable[[int], AmdRoots], identity: PlatformIdentity
) -> None:
    from psp_helpers import ready

    src = ready(SevFirmware(identity, seed=b"es-src"), 1)
    dst = ready(SevFirmware(generate("milan", b"es dst", amd_roots(4096))), 1)
    handle = Guests(src).launch(0x4)
    vmsa = os.urandom(PAGE)
    src._guests[handle].memory.write(0x3000, vmsa)
    src.launch_update_vmsa(handle, 0x3000)
    src.launch_measure(handle)
    src.launch_finish(handle)
    start = src.send_start(handle, pdh_of(dst))
    with pytest.raises(SevError) as err:
        src.send_update_vmsa(handle, 0x4000)  # not a VMSA
    assert err.value.status is SevStatus.INVALID_PARAM
    header, packet = src.send_update_vmsa(handle, 0x3000)
    new = dst.receive_start(pdh_of(src), start.session, 0x4)
    dst.activate(new, 1)
    dst.receive_update_vmsa(new, header, 0x3000, packet)
    dst.receive_finish(new)
    assert dst.dbg_decrypt(new, 0x3000, PAGE) == vmsa
