"""The daemon's configuration: built-in defaults < TOML file < environment < flags.

Every key is declared once in `KEYS` (section, name, type, default, check); unknown keys and
bad values are errors naming the file, the key and the reason. `--print-config` prints the
effective configuration as TOML that `--config` reads back.

The environment contributes `$RUNTIME_DIRECTORY` and `$STATE_DIRECTORY` (set by systemd's
RuntimeDirectory=/StateDirectory=) and the XDG fallbacks (DESIGN §3). A `Config` remembers
how it was loaded so that SIGHUP can load it again (`reload()`); `RELOADABLE` lists the keys
a running daemon applies then, every other change needs a restart.

Imports nothing from the rest of sevd (it must stay cheap: `--check-config` loads only this).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROFILES = ("naples", "rome", "milan", "genoa", "none")  # none: a host without SEV
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
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


def _abs_path(v: Any) -> str | None:
    return None if not v or os.path.isabs(v) else "must be an absolute path"


def _abs_paths(v: Any) -> str | None:
    ok = all(isinstance(x, str) and os.path.isabs(x) for x in v)
    return None if ok else "must be a list of absolute paths"


def _ids(v: Any) -> str | None:
    ok = all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 32 for x in v)
    return None if ok else "must be a list of non-negative integers (uids/gids)"


def _backlog(v: Any) -> str | None:
    # The kernel caps it at net.core.somaxconn (4096 by default since Linux 5.4).
    return None if 1 <= v <= 65535 else "must be 1 to 65535"


def _http_listen(v: Any) -> str | None:
    """`""` (off), `unix:PATH` or `tcp:HOST:PORT` with a loopback HOST: the HTTP side is
    read-only but unauthenticated, so it never listens beyond this machine."""
    if v == "":
        return None
    kind, _, rest = v.partition(":")
    if kind == "unix":
        return None if rest else "must name a socket path after unix:"
    if kind != "tcp":
        return 'must be "", "unix:PATH" or "tcp:127.0.0.1:PORT"'
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or int(port) > 65535:
        return "must end with a port number (0-65535)"
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else (f"must listen on a loopback address (127.0.0.1, [::1] or "
                                  f"localhost), not '{host}': the HTTP side has no "
                                  "authentication")


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
    Key("paths", "firmware_dirs", list, [], _abs_paths, doc="where client-named files "
        "(firmware, session files) may be read from; relative names are searched here in "
        "order; default Debian's OVMF/QEMU folders and <state_dir>/firmware"),
    Key("paths", "dump_dir", str, "", _abs_path, doc="where dumps are written, relative "
        "names resolved here; default <state_dir>/dumps"),
    Key("daemon", "shutdown_timeout", float, 5.0, _positive, "seconds in-flight commands "
        "get to finish on SIGTERM/SIGINT before sessions are closed"),
    Key("qmp", "qemu_version", str, "9.2.0", _version, "emulated QEMU version (cosmetic)"),
    Key("qmp", "max_message", int, 64 << 20, _message, "bytes in one message"),
    Key("qmp", "max_nesting", int, 1024, _nesting, "JSON nesting depth"),
    Key("qmp", "max_output", int, 64 << 20, _positive, "unread output bytes per client "
        "before it is disconnected"),
    Key("qmp", "negotiation_timeout", float, 0.0, _non_negative,
        "seconds a client may stay unnegotiated (0 = forever, as QEMU)"),
    Key("qmp", "max_clients_per_socket", int, 1024, _positive),
    Key("qmp", "max_clients_total", int, 4096, _positive),
    Key("qmp", "backlog", int, 2048, _backlog, "listen backlog (>= 1,000 simultaneous "
        "connects; capped by net.core.somaxconn)"),
    Key("qmp", "socket_mode", str, "0660", _mode),
    Key("access", "allow_uids", list, [], _ids, doc="uids allowed besides root (both lists "
        "empty = anyone who can open the socket file)"),
    Key("access", "allow_gids", list, [], _ids, doc="primary gids allowed besides root"),
    Key("log", "level", str, "info", _one_of(LOG_LEVELS)),
    Key("platform", "profile", str, "milan", _one_of(PROFILES),
        "simulated EPYC generation; none = a host without SEV (QEMU's SEV commands fail "
        "as they do there)"),
    Key("platform", "seed", str, "", _seed, "hex seed for a reproducible platform"),
    Key("http", "listen", str, "", _http_listen, "read-only HTTP (metrics, health, API, "
        "events, status page): \"\" = off, \"unix:PATH\" (relative to runtime_dir) or "
        "\"tcp:127.0.0.1:PORT\" (loopback only)"),
)
_BY_NAME = {(k.section, k.name): k for k in KEYS}

# What SIGHUP applies to a running daemon (limits apply to connections made afterwards,
# max_output at once); anything else is reported as needing a restart.
RELOADABLE = frozenset({
    "log.level", "access.allow_uids", "access.allow_gids", "daemon.shutdown_timeout",
    "qmp.max_message", "qmp.max_nesting", "qmp.max_output", "qmp.negotiation_timeout",
    "qmp.max_clients_per_socket", "qmp.max_clients_total"})


@dataclass
class Config:
    values: dict[tuple[str, str], Any]
    source: str = "built-in defaults"
    # How it was loaded, for reload(): the file, the environment, the flags.
    path: str | None = None
    env: Mapping[str, str] | None = None
    overrides: Mapping[str, Any] | None = None

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

    def reload(self) -> Config:
        """Load again from the same file, environment and flags (raises ConfigError)."""
        return load(self.path, self.env, self.overrides)

    def changes(self, new: Config) -> tuple[list[str], list[str]]:
        """Keys whose value differs in `new`: (applied on reload, needing a restart)."""
        changed = [f"{s}.{n}" for (s, n), v in new.values.items() if self.values[(s, n)] != v]
        return ([k for k in changed if k in RELOADABLE],
                [k for k in changed if k not in RELOADABLE])

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
    for name in ("runtime_dir", "state_dir", "control_socket", "guest_socket_dir"):
        # Relative paths (from flags) are taken from the working directory at start-up, and
        # printed absolute so that --print-config output means the same from anywhere.
        values[("paths", name)] = os.path.abspath(values[("paths", name)])
    control = values[("paths", "control_socket")]
    if len(os.fsencode(control)) > SUN_PATH_MAX:
        raise ConfigError(f"{path or 'configuration'}: paths.control_socket: '{control}' is "
                          f"{len(os.fsencode(control))} bytes long, over the {SUN_PATH_MAX}-byte "
                          "limit of unix socket paths (choose a shorter runtime_dir)")
    return Config(values, source, path, env, dict(overrides or {}))


def parse_assignment(text: str) -> tuple[str, Any]:
    """`section.key=value` from `--set`: the value is read as TOML, else taken as a string.

    So `--set qmp.max_output=65536` is an integer, `--set access.allow_uids=[1000]` a list,
    and `--set qmp.socket_mode=0600` or `--set paths.dump_dir=/srv/dumps` strings.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"command line: --set {text}: expected SECTION.KEY=VALUE")
    section, _, name = key.partition(".")
    spec = _BY_NAME.get((section, name))
    if spec is None:
        raise ConfigError(f"command line: {key}: unknown key")
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if spec.type is str and not isinstance(value, str):
        value = raw  # e.g. a hex seed that happens to look like a number
    return key, value
