"""Configuration: defaults < TOML file < environment < flags; errors name file, key and
reason; --check-config / --print-config / --set; reload for SIGHUP; cheap start-up imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sevd.config import RELOADABLE, ConfigError, default_dirs, load, parse_assignment


def sevd_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sevd", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=30)


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "sevd.toml"
    p.write_text(text)
    return str(p)


# -- defaults and precedence -----------------------------------------------------------------


def test_default_dirs() -> None:
    assert default_dirs({}, 0) == ("/run/sevd", "/var/lib/sevd")
    env = {"XDG_RUNTIME_DIR": "/run/user/1000", "XDG_STATE_HOME": "/home/u/.st"}
    assert default_dirs(env, 1000) == ("/run/user/1000/sevd", "/home/u/.st/sevd")
    # systemd's RuntimeDirectory=/StateDirectory= win, first entry of a ':' list.
    env = {**env, "RUNTIME_DIRECTORY": "/run/sevd:/run/other", "STATE_DIRECTORY": "/var/lib/x"}
    assert default_dirs(env, 0) == ("/run/sevd", "/var/lib/x")


def test_derived_paths_and_firmware_defaults() -> None:
    c = load(env={"RUNTIME_DIRECTORY": "/r", "STATE_DIRECTORY": "/s"})
    assert c.control_socket == "/r/sevd.sock"
    assert c.guest_socket_dir == Path("/r/guests")
    assert c["paths.dump_dir"] == "/s/dumps"
    assert c["paths.firmware_dirs"][0] == "/usr/share/OVMF"
    assert c["paths.firmware_dirs"][-1] == "/s/firmware"
    assert c.source == "built-in defaults"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[paths]\nstate_dir = "/from-file"\n[qmp]\nmax_output = 4096\n'
                 '[log]\nlevel = "debug"\n')
    env = {"RUNTIME_DIRECTORY": "/env-run", "STATE_DIRECTORY": "/env-state"}
    c = load(path, env)
    assert c["paths.state_dir"] == "/from-file"  # the file names it: env is only a default
    assert c["paths.runtime_dir"] == "/env-run"
    assert c["qmp.max_output"] == 4096
    c = load(path, env, {"log.level": "warning", "paths.state_dir": "/flag"})
    assert (c["log.level"], c["paths.state_dir"]) == ("warning", "/flag")


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = load(env={}, overrides={"paths.runtime_dir": "rel"})
    assert c["paths.runtime_dir"] == str(tmp_path / "rel")
    assert c.control_socket == str(tmp_path / "rel" / "sevd.sock")


# -- errors name the file, the key and the reason --------------------------------------------


@pytest.mark.parametrize(("text", "error"), [
    ("[qmp]\nbogus = 1\n", "{p}: qmp.bogus: unknown key"),
    ("[nosuch]\nx = 1\n", "{p}: nosuch.x: unknown key"),
    ("qmp = 1\n", "{p}: qmp: expected a [qmp] table"),
    ('[qmp]\nmax_message = "big"\n', "{p}: qmp.max_message: expected int, got str"),
    ("[qmp]\nmax_message = 0\n",
     "{p}: qmp.max_message: 0 must be 1 to 67108864 (QEMU's 64 MiB ceiling)"),
    ("[qmp]\nmax_message = 67108865\n", "{p}: qmp.max_message: 67108865 must be 1 to"),
    ("[qmp]\nmax_nesting = 1025\n", "{p}: qmp.max_nesting: 1025 must be 1 to 1024"),
    ("[qmp]\nbacklog = 0\n", "{p}: qmp.backlog: 0 must be 1 to 65535"),
    ("[qmp]\nnegotiation_timeout = -1\n", "{p}: qmp.negotiation_timeout: -1.0 must not be"),
    ('[qmp]\nsocket_mode = "0999"\n', "{p}: qmp.socket_mode: '0999' must be an octal mode"),
    ("[qmp]\nmax_clients_total = true\n", "{p}: qmp.max_clients_total: expected int, got bool"),
    ("[access]\nallow_uids = [-1]\n", "{p}: access.allow_uids: [-1] must be a list of "
     "non-negative integers"),
    ('[access]\nallow_gids = ["wheel"]\n', "{p}: access.allow_gids: ['wheel'] must be a list"),
    ('[paths]\nfirmware_dirs = ["relative/dir"]\n', "{p}: paths.firmware_dirs: ['relative/dir'] "
     "must be a list of absolute paths"),
    ('[paths]\ndump_dir = "dumps"\n', "{p}: paths.dump_dir: 'dumps' must be an absolute path"),
    ('[log]\nlevel = "loud"\n', "{p}: log.level: 'loud' must be one of debug, info, warning"),
    ('[platform]\nseed = "xyz"\n', "{p}: platform.seed: 'xyz' must be hexadecimal"),
    ('[qmp]\nqemu_version = "9.2"\n', "{p}: qmp.qemu_version: '9.2' must look like MAJOR"),
    ("[daemon]\nshutdown_timeout = 0\n", "{p}: daemon.shutdown_timeout: 0.0 must be positive"),
    ("[qmp\n", "{p}: not valid TOML: "),
])
def test_file_errors(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path, {})
    assert str(e.value).startswith(error.format(p=path)), str(e.value)


def test_missing_file_and_long_socket_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"/nonexistent.toml: cannot read: No such file"):
        load("/nonexistent.toml", {})
    long_dir = "/tmp/" + "d" * 100
    with pytest.raises(ConfigError, match=r"paths.control_socket: '.*' is 115 bytes long, over "
                       r"the 107-byte limit of unix socket paths"):
        load(env={"RUNTIME_DIRECTORY": long_dir})


def test_flag_errors() -> None:
    with pytest.raises(ConfigError, match=r"command line: qmp.nope: unknown key"):
        load(env={}, overrides={"qmp.nope": 1})
    with pytest.raises(ConfigError, match=r"command line: qmp.max_output: -5 must be positive"):
        load(env={}, overrides={"qmp.max_output": -5})


def test_set_values_are_read_as_toml_then_as_strings() -> None:
    assert parse_assignment("qmp.max_output=65536") == ("qmp.max_output", 65536)
    assert parse_assignment("access.allow_uids=[1000, 1001]") == ("access.allow_uids",
                                                                   [1000, 1001])
    assert parse_assignment("qmp.socket_mode=0600") == ("qmp.socket_mode", "0600")
    assert parse_assignment("paths.dump_dir=/srv/d") == ("paths.dump_dir", "/srv/d")
    assert parse_assignment('log.level="debug"') == ("log.level", "debug")
    assert parse_assignment("platform.seed=1234") == ("platform.seed", "1234")
    assert parse_assignment("qmp.negotiation_timeout=0.5") == ("qmp.negotiation_timeout", 0.5)
    with pytest.raises(ConfigError, match=r"expected SECTION.KEY=VALUE"):
        parse_assignment("qmp.max_output")
    with pytest.raises(ConfigError, match=r"command line: qmp.x: unknown key"):
        parse_assignment("qmp.x=1")


# -- reload (SIGHUP) -------------------------------------------------------------------------


def test_reload_reports_what_applies_and_what_needs_a_restart(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevel = "info"\n')
    c = load(path, {}, {"qmp.max_output": 1000})
    Path(path).write_text('[log]\nlevel = "debug"\n[access]\nallow_uids = [5]\n'
                          '[platform]\nprofile = "rome"\n[qmp]\nmax_output = 5\n')
    new = c.reload()
    assert new["qmp.max_output"] == 1000  # the flag still wins over the file
    applied, restart = c.changes(new)
    assert applied == ["access.allow_uids", "log.level"] or \
        sorted(applied) == ["access.allow_uids", "log.level"]
    assert restart == ["platform.profile"]
    Path(path).write_text("[qmp]\nmax_message = 0\n")
    with pytest.raises(ConfigError, match="max_message"):
        c.reload()


def test_reloadable_keys_exist() -> None:
    c = load(env={})
    for key in RELOADABLE:
        assert c[key] is not None  # KeyError for a key that does not exist


# -- the command line ------------------------------------------------------------------------


def test_check_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[qmp]\nmax_output = 4096\n")
    r = sevd_cli("--config", path, "--check-config")
    assert (r.returncode, r.stdout) == (0, f"sevd: configuration OK ({path})\n")
    Path(path).write_text("[qmp]\nmax_output = 0\n")
    r = sevd_cli("--config", path, "--check-config")
    assert r.returncode == 2
    assert r.stderr == f"sevd: {path}: qmp.max_output: 0 must be positive\n"
    r = sevd_cli("--set", "qmp.nope=1", "--check-config")
    assert (r.returncode, r.stderr) == (2, "sevd: command line: qmp.nope: unknown key\n")


def test_print_config_round_trips(tmp_path: Path) -> None:
    r = sevd_cli("--runtime-dir", "/tmp/x", "--set", "access.allow_uids=[7]", "--set",
                 "qmp.socket_mode=0600", "--print-config", env={"STATE_DIRECTORY": "/s"})
    assert r.returncode == 0, r.stderr
    assert 'runtime_dir = "/tmp/x"' in r.stdout
    assert "allow_uids = [7]" in r.stdout
    assert 'socket_mode = "0600"' in r.stdout
    assert 'dump_dir = "/s/dumps"' in r.stdout
    path = write(tmp_path, r.stdout)
    again = sevd_cli("--config", path, "--print-config")
    assert again.stdout == r.stdout


def test_check_config_imports_nothing_heavy() -> None:
    # --check-config loads only the configuration: no asyncio, no schema, no aiohttp.
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "sevd", "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    modules = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
               if line.startswith("import time:")}
    assert "sevd.config" in modules  # the probe works
    for heavy in ("aiohttp", "asyncio", "jsonschema", "cryptography", "sevd.daemon"):
        assert heavy not in modules, f"--check-config imports {heavy}"


def test_readme_example_is_a_valid_configuration(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    c = load(write(tmp_path, example), {})
    assert c["access.allow_uids"] == [1000] and c["qmp.backlog"] == 2048
