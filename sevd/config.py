"""The daemon's configuration: built-in defaults < TOML file < environment < flags.

Every key is declared once in `KEYS` (section, name, type, default, check); unknown keys and
bad values are errors naming the file, the key and the reason. `--print-config` prints the
effective configuration as TOML that `--config` reads back.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROFILES = ("naples", "rome", "milan", "genoa")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A configuration problem; the text names where and why."""


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    type: type
    default: Any
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be positive"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _version(v: Any) -> str | None:
    parts = v.split(".")
    ok = len(parts) == 3 and all(p.isdigit() for p in parts)
    return None if ok else "must look like MAJOR.MINOR.MICRO"


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _mode(v: Any) -> str | None:
    try:
        m = int(v, 8)
    except ValueError:
        return "must be an octal mode such as \"0660\""
    return None if 0 < m <= 0o777 else "must be an octal mode between 0001 and 0777"


def _message(v: Any) -> str | None:
    return None if 0 < v <= 64 << 20 else "must be 1 to 67108864 (QEMU's 64 MiB ceiling)"


def _nesting(v: Any) -> str | None:
    return None if 1 <= v <= 1024 else "must be 1 to 1024 (QEMU's ceiling)"


def _seed(v: Any) -> str | None:
    try:
        bytes.fromhex(v)
    except ValueError:
        return "must be hexadecimal"
    return None


KEYS: tuple[Key, ...] = (
    Key("paths", "runtime_dir", str, "", doc="sockets; default $RUNTIME_DIRECTORY, /run/sevd "
        "for root, $XDG_RUNTIME_DIR/sevd, else ./sevd-run"),
    Key("paths", "state_dir", str, "", doc="identity, guest definitions, dumps; default "
        "$STATE_DIRECTORY, /var/lib/sevd for root, else $XDG_STATE_HOME/sevd"),
    Key("paths", "control_socket", str, "", doc="default <runtime_dir>/sevd.sock"),
    Key("paths", "guest_socket_dir", str, "", doc="default <runtime_dir>/guests"),
    Key("paths", "firmware_dirs", list, [], doc="where client-named files may be read from; "
        "default Debian's OVMF/QEMU folders and <state_dir>/firmware"),
    Key("paths", "dump_dir", str, "", doc="where dumps are written; default <state_dir>/dumps"),
    Key("qmp", "qemu_version", str, "9.2.0", _version, "emulated QEMU version (cosmetic)"),
    Key("qmp", "max_message", int, 64 << 20, _message, "bytes in one message"),
    Key("qmp", "max_nesting", int, 1024, _nesting, "JSON nesting depth"),
    Key("qmp", "max_output", int, 64 << 20, _positive, "unread output bytes per client "
        "before it is disconnected"),
    Key("qmp", "negotiation_timeout", float, 0.0, _non_negative,
        "seconds a client may stay unnegotiated (0 = forever, as QEMU)"),
    Key("qmp", "max_clients_per_socket", int, 1024, _positive),
    Key("qmp", "max_clients_total", int, 4096, _positive),
    Key("qmp", "backlog", int, 2048, _positive, "listen backlog"),
    Key("qmp", "socket_mode", str, "0660", _mode),
    Key("access", "allow_uids", list, [], doc="uids allowed besides root (empty = anyone "
        "who can open the socket file)"),
    Key("access", "allow_gids", list, [], doc="gids allowed besides root"),
    Key("log", "level", str, "info", _one_of(LOG_LEVELS)),
    Key("platform", "profile", str, "milan", _one_of(PROFILES), "simulated EPYC generation"),
    Key("platform", "seed", str, "", _seed, "hex seed for a reproducible platform"),
)
_BY_NAME = {(k.section, k.name): k for k in KEYS}


@dataclass
class Config:
    values: dict[tuple[str, str], Any]
    source: str = "built-in defaults"

    def __getitem__(self, key: str) -> Any:
        section, _, name = key.partition(".")
        return self.values[(section, name)]

    def __setitem__(self, key: str, value: Any) -> None:
        section, _, name = key.partition(".")
        spec = _BY_NAME[(section, name)]
        self.values[(section, name)] = _checked(spec, value, "command line")

    # -- derived paths ----------------------------------------------------------------------

    @property
    def runtime_dir(self) -> Path:
        return Path(self["paths.runtime_dir"])

    @property
    def state_dir(self) -> Path:
        return Path(self["paths.state_dir"])

    @property
    def control_socket(self) -> str:
        return str(self["paths.control_socket"])

    @property
    def guest_socket_dir(self) -> Path:
        return Path(self["paths.guest_socket_dir"])

    def to_toml(self) -> str:
        out: list[str] = []
        section = ""
        for k in KEYS:
            if k.section != section:
                section = k.section
                out.append(f"\n[{section}]" if out else f"[{section}]")
            if k.doc:
                out.append(f"# {k.doc}")
            out.append(f"{k.name} = {_toml_value(self.values[(k.section, k.name)])}")
        return "\n".join(out) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _checked(spec: Key, value: Any, where: str) -> Any:
    name = f"{spec.section}.{spec.name}"
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.type) or isinstance(value, bool) != (spec.type is bool):
        raise ConfigError(f"{where}: {name}: expected {spec.type.__name__}, "
                          f"got {type(value).__name__}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{where}: {name}: {value!r} {problem}")
    return value


def default_dirs(env: Mapping[str, str], uid: int) -> tuple[str, str]:
    """DESIGN §3: where sockets and state go when nothing says otherwise."""
    if env.get("RUNTIME_DIRECTORY"):
        runtime = env["RUNTIME_DIRECTORY"].split(":")[0]
    elif uid == 0:
        runtime = "/run/sevd"
    elif env.get("XDG_RUNTIME_DIR"):
        runtime = os.path.join(env["XDG_RUNTIME_DIR"], "sevd")
    else:
        runtime = os.path.abspath("sevd-run")
    if env.get("STATE_DIRECTORY"):
        state = env["STATE_DIRECTORY"].split(":")[0]
    elif uid == 0:
        state = "/var/lib/sevd"
    elif env.get("XDG_STATE_HOME"):
        state = os.path.join(env["XDG_STATE_HOME"], "sevd")
    else:
        state = os.path.expanduser("~/.local/state/sevd")
    return runtime, state


def load(path: str | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file, then the environment, then `overrides` (flags)."""
    env = os.environ if env is None else env
    values = {(k.section, k.name): k.default for k in KEYS}
    source = "built-in defaults"
    if path:
        source = path
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {section}: expected a [{section}] table")
            for name, value in table.items():
                spec = _BY_NAME.get((section, name))
                if spec is None:
                    raise ConfigError(f"{path}: {section}.{name}: unknown key")
                values[(section, name)] = _checked(spec, value, path)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        spec = _BY_NAME.get((section, name))
        if spec is None:
            raise ConfigError(f"command line: {key}: unknown key")
        values[(section, name)] = _checked(spec, value, "command line")
    for key in ("access.allow_uids", "access.allow_gids"):
        section, _, name = key.partition(".")
        if any(not isinstance(x, int) or isinstance(x, bool) or x < 0
               for x in values[(section, name)]):
            raise ConfigError(f"{source}: {key}: must be a list of non-negative integers")
    runtime, state = default_dirs(env, os.getuid())
    p = ("paths", "runtime_dir")
    values[p] = values[p] or runtime
    p = ("paths", "state_dir")
    values[p] = values[p] or state
    rd, sd = values[("paths", "runtime_dir")], values[("paths", "state_dir")]
    values[("paths", "control_socket")] = values[("paths", "control_socket")] or \
        os.path.join(rd, "sevd.sock")
    values[("paths", "guest_socket_dir")] = values[("paths", "guest_socket_dir")] or \
        os.path.join(rd, "guests")
    values[("paths", "firmware_dirs")] = values[("paths", "firmware_dirs")] or [
        "/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/qemu", "/usr/share/seabios",
        os.path.join(sd, "firmware")]
    values[("paths", "dump_dir")] = values[("paths", "dump_dir")] or os.path.join(sd, "dumps")
    return Config(values, source)
