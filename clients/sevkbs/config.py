"""The broker's configuration: where it listens, which roots it trusts, and its workloads.

A TOML file (paths in it are relative to the file's folder)::

    listen = "tcp:127.0.0.1:44444"     # or "unix:/run/sevkbs.sock"; loopback only
    launch_ttl = 3600                   # seconds a bundle's launch id stays valid

    [trust]
    # The root a platform's chain must end in: ASK‖ARK (or the ARK alone) of sevd's simulated
    # AMD root (query-sev-certificates), or AMD's real ask_ark_<product>.cert.
    ca = "ask_ark.cert"
    # allow_unpinned = true   # accept any internally consistent chain, as simple-kbs does

    [workloads.KEYSET-1]               # the id a SecretRequest names (Kata: the keyset)
    policies = [0, 1]                  # guest policies allowed (default [0])
    min_api = [0, 17]                  # optional: firmware API at least 0.17
    build_ids = [15]                   # optional: firmware builds allowed
    digests = ["<base64 or hex of a 32-byte launch digest>"]
    [[workloads.KEYSET-1.boot]]        # or a digest computed as QEMU measures a boot:
    firmware = "OVMF.fd"
    kernel = "vmlinuz"                 # optional, with initrd and cmdline
    initrd = "initrd.img"
    cmdline = "console=ttyS0"
    cpus = 2                           # SEV-ES only: the VMSAs are measured too
    vcpu_type = "EPYC-Milan"
    [workloads.KEYSET-1.secrets]       # what is released, by GUID
    "e6f5a162-d67f-4750-a67c-5d065f2a9910" = { json = { key1 = "…" } }
    "736869e5-84f0-4973-92ec-06879ce3da0b" = { text = "…" }   # or base64 = / file =

Errors name the file, the key and the reason (:class:`ConfigError`). Secret values are kept
in memory only and never appear in an error or a log line.

Imports only :mod:`sevowner`, :mod:`sevd.formats` and the standard library.
"""

from __future__ import annotations

import base64
import binascii
import json
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sevowner.chain import CaChain, load_ca_chain
from sevowner.measurement import expected_launch_digest

from sevd.formats.amdca import AmdCaCert, parse_ca_chain
from sevd.formats.ovmf import sev_es_reset_eip
from sevd.formats.vmsa import CPU_SIGNATURES, vmsa_pages

__all__ = ["BrokerConfig", "ConfigError", "Workload", "load_config", "parse_config"]

DEFAULT_LISTEN = "tcp:127.0.0.1:44444"  # simple-kbs's port (client/LaunchVM.py)


class ConfigError(ValueError):
    """A configuration problem; the text names the file, the key and why."""


@dataclass(repr=False)
class Workload:
    """What a guest must have been launched with to get these secrets."""

    id: str
    policies: frozenset[int] = frozenset({0})
    min_api: tuple[int, int] | None = None
    build_ids: frozenset[int] | None = None
    digests: list[bytes] = field(default_factory=list)
    secrets: dict[uuid.UUID, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the secrets
        return (f"Workload({self.id!r}, policies={sorted(self.policies)}, "
                f"{len(self.digests)} digests, {len(self.secrets)} secrets)")


@dataclass
class BrokerConfig:
    listen: str = DEFAULT_LISTEN
    launch_ttl: float = 3600.0
    max_launches: int = 10000
    ca: CaChain | None = None
    ark: AmdCaCert | None = None
    allow_unpinned: bool = False
    workloads: dict[str, Workload] = field(default_factory=dict)
    source: str = "<config>"


def load_config(path: str | Path) -> BrokerConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    return parse_config(text, base=p.parent, source=str(p))


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of "
                              f"{', '.join(sorted(allowed))})")


def _expect(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: expected {what}")
    return value


def _bytes_value(where: str, text: str) -> bytes:
    """A digest given as hex or base64."""
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
    except ValueError:
        pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not hex or base64") from None


def parse_config(text: str, base: Path = Path(), source: str = "<config>") -> BrokerConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    _check_keys(source, data, {"listen", "launch_ttl", "max_launches", "trust", "workloads"})
    cfg = BrokerConfig(source=source)
    cfg.listen = _expect(f"{source}: listen", data.get("listen", DEFAULT_LISTEN), str,
                         'a string such as "tcp:127.0.0.1:44444" or "unix:PATH"')
    problem = check_listen(cfg.listen)
    if problem:
        raise ConfigError(f"{source}: listen: {problem}")
    ttl = _expect(f"{source}: launch_ttl", data.get("launch_ttl", 3600), (int, float),
                  "a number of seconds")
    if ttl <= 0:
        raise ConfigError(f"{source}: launch_ttl: must be positive")
    cfg.launch_ttl = float(ttl)
    cfg.max_launches = _expect(f"{source}: max_launches", data.get("max_launches", 10000), int,
                               "an integer")
    trust = _expect(f"{source}: trust", data.get("trust", {}), dict, "a [trust] table")
    _check_keys(f"{source}: trust", trust, {"ca", "allow_unpinned"})
    cfg.allow_unpinned = _expect(f"{source}: trust.allow_unpinned",
                                 trust.get("allow_unpinned", False), bool, "true or false")
    if "ca" in trust:
        ca_path = base / _expect(f"{source}: trust.ca", trust["ca"], str, "a file name")
        cfg.ca, cfg.ark = _load_roots(f"{source}: trust.ca", ca_path)
    elif not cfg.allow_unpinned:
        raise ConfigError(f"{source}: trust.ca: missing: name the AMD root (ASK‖ARK or ARK) "
                          "that platform chains must end in, or set trust.allow_unpinned = "
                          "true to accept any internally consistent chain")
    workloads = _expect(f"{source}: workloads", data.get("workloads", {}), dict,
                        "[workloads.ID] tables")
    if not workloads:
        raise ConfigError(f"{source}: workloads: none defined; a broker without workloads "
                          "releases nothing")
    for wid, table in workloads.items():
        cfg.workloads[wid] = _workload(f"{source}: workloads.{wid}", wid,
                                       _expect(f"{source}: workloads.{wid}", table, dict,
                                               "a table"), base)
    return cfg


def check_listen(listen: str) -> str | None:
    """`unix:PATH` or `tcp:HOST:PORT` on a loopback address; None if fine."""
    import ipaddress

    kind, _, rest = listen.partition(":")
    if kind == "unix":
        return None if rest else "a socket path must follow unix:"
    if kind != "tcp":
        return f"'{listen}' is neither unix:PATH nor tcp:HOST:PORT"
    host, _, port = rest.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        return f"'{listen}' must end with a port number"
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else (f"'{host}' is not a loopback address: the broker speaks "
                                  "plain HTTP, so it listens on this machine only")


def _load_roots(where: str, path: Path) -> tuple[CaChain | None, AmdCaCert]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    try:
        certs = parse_ca_chain(data)
    except ValueError as e:
        raise ConfigError(f"{where}: {path} is not an AMD root certificate file: {e}") from None
    if len(certs) == 1:
        return None, certs[0]
    try:
        ca = load_ca_chain(path)
    except ValueError as e:
        raise ConfigError(f"{where}: {path}: {e}") from None
    return ca, ca.ark


def _workload(where: str, wid: str, table: dict[str, Any], base: Path) -> Workload:
    _check_keys(where, table, {"policies", "min_api", "build_ids", "digests", "boot",
                               "secrets"})
    w = Workload(wid)
    policies = _expect(f"{where}.policies", table.get("policies", [0]), list,
                       "a list of 32-bit guest policies")
    for p in policies:
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 0xFFFF_FFFF:
            raise ConfigError(f"{where}.policies: {p!r} is not a 32-bit policy")
    w.policies = frozenset(policies)
    if "min_api" in table:
        api = table["min_api"]
        if not (isinstance(api, list) and len(api) == 2 and all(
                isinstance(x, int) and 0 <= x <= 255 for x in api)):
            raise ConfigError(f"{where}.min_api: expected [MAJOR, MINOR]")
        w.min_api = (api[0], api[1])
    if "build_ids" in table:
        ids = _expect(f"{where}.build_ids", table["build_ids"], list, "a list of integers")
        w.build_ids = frozenset(int(x) for x in ids)
    for i, d in enumerate(_expect(f"{where}.digests", table.get("digests", []), list,
                                  "a list of digests")):
        digest = _bytes_value(f"{where}.digests[{i}]", _expect(
            f"{where}.digests[{i}]", d, str, "hex or base64 text"))
        if len(digest) != 32:
            raise ConfigError(f"{where}.digests[{i}]: a launch digest is 32 bytes, not "
                              f"{len(digest)}")
        w.digests.append(digest)
    for i, boot in enumerate(_expect(f"{where}.boot", table.get("boot", []), list,
                                     "[[boot]] tables")):
        w.digests.append(_boot_digest(f"{where}.boot[{i}]", boot, base))
    if not w.digests:
        raise ConfigError(f"{where}: no expected launch digest: give digests or [[boot]]")
    secrets = _expect(f"{where}.secrets", table.get("secrets", {}), dict,
                      "a table of GUID = { text | base64 | file | json }")
    for guid_text, spec in secrets.items():
        sw = f"{where}.secrets.{guid_text}"
        try:
            guid = uuid.UUID(guid_text)
        except ValueError:
            raise ConfigError(f"{sw}: not a GUID") from None
        w.secrets[guid] = _secret_value(sw, spec, base)
    if not w.secrets:
        raise ConfigError(f"{where}: no secrets")
    return w


def _boot_digest(where: str, boot: Any, base: Path) -> bytes:
    _expect(where, boot, dict, "a table")
    _check_keys(where, boot, {"firmware", "kernel", "initrd", "cmdline", "cpus", "vcpu_type"})
    if "firmware" not in boot:
        raise ConfigError(f"{where}.firmware: missing")

    def read(key: str) -> bytes | None:
        if key not in boot:
            return None
        path: Path = base / _expect(f"{where}.{key}", boot[key], str, "a file name")
        try:
            return path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{where}.{key}: cannot read {path}: {e.strerror}") from None

    firmware = read("firmware")
    assert firmware is not None
    kernel, initrd = read("kernel"), read("initrd")
    cmdline = boot.get("cmdline")
    vmsas: list[bytes] = []
    if "cpus" in boot or "vcpu_type" in boot:
        # SEV-ES: QEMU measures one VMSA per vCPU after the firmware (and hashes table).
        cpus = _expect(f"{where}.cpus", boot.get("cpus", 1), int, "a vCPU count")
        vtype = _expect(f"{where}.vcpu_type", boot.get("vcpu_type", "EPYC"), str,
                        "a QEMU EPYC CPU model name")
        if vtype not in CPU_SIGNATURES:
            raise ConfigError(f"{where}.vcpu_type: unknown model '{vtype}' (known: "
                              f"{', '.join(CPU_SIGNATURES)})")
        try:
            vmsas = vmsa_pages(cpus, sev_es_reset_eip(firmware) or 0, CPU_SIGNATURES[vtype])
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    try:
        return expected_launch_digest(firmware, kernel, initrd, cmdline, vmsas)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


_SECRET_KINDS: dict[str, Callable[[str, Any, Path], bytes]] = {
    "text": lambda w, v, b: _expect(w, v, str, "a string").encode(),
    "base64": lambda w, v, b: _b64_secret(w, _expect(w, v, str, "base64 text")),
    "file": lambda w, v, b: _file_secret(w, b / _expect(w, v, str, "a file name")),
    "json": lambda w, v, b: json.dumps(_expect(w, v, dict, "a table"),
                                       separators=(",", ":")).encode(),
}


def _b64_secret(where: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not base64") from None


def _file_secret(where: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None


def _secret_value(where: str, spec: Any, base: Path) -> bytes:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in _SECRET_KINDS:
        raise ConfigError(f"{where}: expected exactly one of "
                          f"{', '.join(_SECRET_KINDS)} (e.g. {{ text = \"…\" }})")
    kind, value = next(iter(spec.items()))
    return _SECRET_KINDS[kind](f"{where}.{kind}", value, base)
