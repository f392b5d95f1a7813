"""Helpers for the SEV integration tests: firmware folders, daemons, QMP clients, the owner.

The guest owner here is `sevowner` (the package a real owner runs on a trusted machine);
it talks to the daemon only through what QMP returns. Launch digests that must be
independent of sevd come from `sev-snp-measure` (`snp_measure`), never from sevd's code.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

from qemu.qmp import ExecuteError, QMPClient
from sevowner.attestation import verify_attestation_report
from sevowner.chain import CaChain, SevChain, verify_chain
from sevowner.measurement import verify_launch_measurement
from sevowner.secret import LaunchSecret, build_launch_secret
from sevowner.session import LaunchSession, create_session

from sevd.formats.amdca import AmdCaCert
from sevd.formats.sevcert import SevCert

ROOT = Path(__file__).resolve().parents[2]


def _root_conftest() -> ModuleType:
    # Every test folder has a module called `conftest`; `import conftest` would get whichever
    # pytest loaded last, so the top-level one is loaded by path under a name of its own.
    name = "sevd_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class DaemonProc(Protocol):
    """What the tests use of `tests/conftest.py`'s DaemonProc (a running `python -m sevd`)."""

    base: Path
    proc: subprocess.Popen[bytes]
    args: list[str]

    @property
    def control(self) -> str: ...

    @property
    def state_dir(self) -> Path: ...

    def guest_socket(self, name: str) -> str: ...

    def stop(self, sig: int = ..., timeout: float = ...) -> int: ...


_top = _root_conftest()
RawQmp = _top.RawQmp
start_daemon = _top.start_daemon
short_tmpdir = _top.short_tmpdir
identity_for = _top.test_identity  # not test_*: pytest would collect it
DATA = ROOT / "tests" / "formats" / "data" / "virtee-sevctl"
BUILTIN = ROOT / "sevd" / "data" / "sevd-builtin.fd"
AMDSEV = DATA / "OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
KERNEL = DATA / "measurement" / "vmlinuz-fake"
INITRD = DATA / "measurement" / "initrd-fake"
DEBIAN_OVMF = next((p for p in (Path("/usr/share/ovmf/OVMF.fd"),
                                Path("/usr/share/OVMF/OVMF_CODE.fd")) if p.exists()), None)
SNP_MEASURE = Path(sys.executable).parent / "sev-snp-measure"

# Kata's default secret GUID (guest_pre_attestation_secret_guid) and KubeVirt's.
KATA_GUID = uuid.UUID("e6f5a162-d67f-4750-a67c-5d065f2a9910")
KUBEVIRT_GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")

_names = itertools.count(1)


def guest_name(prefix: str = "g") -> str:
    """A fresh guest name (daemons are shared by the tests of a module)."""
    return f"{prefix}{next(_names)}"


def firmware_dir(base: Path) -> Path:
    """`<base>/fw`: the images and boot files the tests name, as an allowed directory."""
    fw = base / "fw"
    fw.mkdir(exist_ok=True)
    for src, name in ((BUILTIN, "builtin.fd"), (AMDSEV, "amdsev.fd"), (KERNEL, "vmlinuz"),
                      (INITRD, "initrd")):
        shutil.copyfile(src, fw / name)
    if DEBIAN_OVMF is not None:
        shutil.copyfile(DEBIAN_OVMF, fw / "debian-ovmf.fd")
    # An image without an OVMF footer table: no secret area, no hashes table.
    (fw / "plain.fd").write_bytes(b"\xf4" * 65536)
    return fw


def sev_daemon(base: Path, *flags: str, profile: str = "milan") -> DaemonProc:
    """A daemon whose only allowed file folder is `<base>/fw`."""
    fw = firmware_dir(base)
    d = cast(DaemonProc, start_daemon(
        base, "--profile", profile, "--set", f'paths.firmware_dirs=["{fw}"]', *flags,
        profile=profile))
    # start_daemon waits for the socket file; after a SIGKILL the old one is still there.
    deadline = time.monotonic() + 15
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(d.control)
                return d
            except OSError:
                if d.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sevd is not listening: {stderr_of(d)}") from None
        time.sleep(0.01)


def stop_daemon(d: DaemonProc) -> None:
    code = d.stop()
    shutil.rmtree(d.base, ignore_errors=True)
    assert code == 0, f"sevd exited with {code}: {stderr_of(d)}"


def stderr_of(d: DaemonProc) -> str:
    """The end of the daemon's log (stderr), once it has exited."""
    return d.proc.stderr.read().decode()[-3000:] if d.proc.stderr else ""


class Qmp(QMPClient):
    """qemu.qmp's client, with `execute` typed as QMP replies are used here (Any)."""

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None,
                      oob: bool = False) -> Any:
        return await super().execute(cmd, arguments, oob)


@asynccontextmanager
async def qmp(path: str, name: str = "test", ends: bool = False) -> AsyncIterator[Qmp]:
    """A negotiated qemu.qmp client; `ends`: the instance is expected to hang up (QEMU's
    quit or exit), which qemu.qmp reports as EOFError on disconnect."""
    c = Qmp(name)
    await c.connect(path)
    try:
        yield c
    finally:
        try:
            await c.disconnect()
        except EOFError:
            if not ends:
                raise


async def error_of(client: QMPClient, cmd: str, args: dict[str, Any] | None = None) -> str:
    """The `desc` of the GenericError that `cmd` must fail with."""
    try:
        reply = await client.execute(cmd, args)
    except ExecuteError as e:
        assert e.error_class == "GenericError", e.error_class
        return str(e)
    raise AssertionError(f"{cmd} succeeded: {reply!r}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def snp_measure(*args: str | Path) -> bytes:
    """The launch digest as `sev-snp-measure` computes it (hex output → 32 bytes)."""
    out = subprocess.run([str(SNP_MEASURE), "--output-format", "hex", *map(str, args)],
                         check=True, capture_output=True, text=True).stdout.strip()
    digest = bytes.fromhex(out)
    assert len(digest) == 32, out
    return digest


def pinned_ark(profile: str = "milan") -> AmdCaCert:
    """The simulated ARK of the identity the fixtures seed: what a guest owner pins, got
    out of band (here from the test's own copy of the identity, not from the daemon)."""
    from sevd.domain.psp import PlatformIdentity

    return PlatformIdentity.from_bytes(identity_for(profile)).roots.ark


@dataclass
class Owner:
    """A guest owner who verified the platform's chain and holds a launch session."""

    session: LaunchSession
    pdh: bytes
    pek: SevCert

    @classmethod
    async def for_host(cls, control: Qmp, policy: int, profile: str = "milan") -> Owner:
        """PDH from query-sev-capabilities, verified through query-sev-certificates against
        the pinned simulated ARK, then a session for `policy`."""
        caps = await control.execute("query-sev-capabilities")
        certs = await control.execute("query-sev-certificates")
        pdh = unb64(caps["pdh"])
        assert unb64(certs["pdh"]) == pdh
        chain = SevChain(*(SevCert.from_bytes(unb64(certs[k]))
                           for k in ("pdh", "pek", "oca", "cek")))
        ca = CaChain(ask=AmdCaCert.from_bytes(unb64(certs["ask"])),
                     ark=AmdCaCert.from_bytes(unb64(certs["ark"])))
        verify_chain(chain, ca, pinned_ark=pinned_ark(profile))
        return cls(create_session(pdh, policy), pdh, chain.pek)

    def sev_guest(self, cbitpos: int = 51, files: tuple[str, str] | None = None,
                  **extra: Any) -> dict[str, Any]:
        """`sev-guest` properties: inline GODH/session, or `files` = (dh-cert, session)."""
        props: dict[str, Any] = {"policy": self.session.policy, "cbitpos": cbitpos,
                                 "reduced-phys-bits": 1, **extra}
        if files is None:
            props |= {"dh-cert": self.session.godh_b64, "session": self.session.session_b64}
        else:
            props |= {"dh-cert-file": files[0], "session-file": files[1]}
        return props

    def write_files(self, folder: Path, stem: str) -> tuple[str, str]:
        """The GODH and session as Kata and libvirt write them (base64 text files)."""
        godh, sess = folder / f"{stem}_godh.b64", folder / f"{stem}_session.b64"
        godh.write_text(self.session.godh_b64)
        sess.write_text(self.session.session_b64)
        return str(godh), str(sess)

    def verify(self, measurement: bytes, sev_info: dict[str, Any], digest: bytes) -> bytes:
        """Check the 48-byte measurement against `digest` with the session's TIK."""
        return verify_launch_measurement(
            measurement, self.session.tik, api_major=sev_info["api-major"],
            api_minor=sev_info["api-minor"], build_id=sev_info["build-id"],
            policy=sev_info["policy"], digest=digest)

    def secret(self, measurement: bytes, secrets: dict[uuid.UUID, bytes]) -> LaunchSecret:
        return build_launch_secret(self.session.tek, self.session.tik, measurement, secrets)

    def check_report(self, report: bytes, mnonce: bytes, digest: bytes) -> None:
        verify_attestation_report(report, self.pek, mnonce=mnonce, launch_digest=digest,
                                  policy=self.session.policy)


async def raw_reply(c: Any, data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send `data` on a RawQmp and read lines as libvirt and govmm do: events (which may
    come before the reply) are collected, the first `return`/`error` line is the reply.
    Every line must end with `\\r\\n` (libvirt splits on it)."""
    import json

    await c.send(data)
    events = []
    while True:
        line = await c.line()
        assert line.endswith(b"\r\n"), line
        msg = json.loads(line)
        if "event" in msg:
            events.append(msg)
            continue
        assert "return" in msg or "error" in msg, msg
        return msg, events
