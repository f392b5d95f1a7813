"""`sevd` / `python -m sevd`: parse flags, load the configuration, run the daemon.

Start-up cost matters (systemd waits for READY=1, CI starts many daemons): this module
imports only the configuration until it knows the daemon will run, so `--check-config` and
`--print-config` load neither asyncio nor the schema, and optional features (aiohttp) are
imported by the code that turns them on.

Exit codes: 0 clean stop, 1 the daemon could not start (the reason is on stderr), 2 a bad
command line or configuration.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sevd import __version__
from sevd.config import LOG_LEVELS, PROFILES, ConfigError, load, parse_assignment


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sevd", description="Simulated AMD SEV guests behind QEMU's monitor protocol "
        "(QMP).", epilog="Configuration: built-in defaults < --config FILE < environment "
        "($RUNTIME_DIRECTORY, $STATE_DIRECTORY) < flags. SIGTERM/SIGINT stop gracefully; "
        "SIGHUP reloads the file's log level, access lists and limits.")
    p.add_argument("--version", action="version", version=f"sevd {__version__}")
    p.add_argument("-c", "--config", help="TOML configuration file")
    p.add_argument("--runtime-dir", help="directory for sockets")
    p.add_argument("--state-dir", help="directory for persistent state")
    p.add_argument("--socket", help="control socket path")
    p.add_argument("--profile", choices=PROFILES, help="simulated EPYC generation")
    p.add_argument("--qemu-version", help="emulated QEMU version in the greeting")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--max-clients", type=int, help="clients per socket")
    p.add_argument("--http", metavar="LISTEN", help="serve read-only HTTP (metrics, health, "
                   "API, events, status page) on unix:PATH or tcp:127.0.0.1:PORT "
                   "(default: off)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="set any configuration key (repeatable; VALUE is read as TOML, "
                   "else as a string), e.g. --set qmp.max_output=1048576")
    p.add_argument("--check-config", action="store_true",
                   help="check the configuration and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML and exit")
    p.add_argument("--validate-returns", action="store_true", help=argparse.SUPPRESS)
    return p


def raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit.

    Each client costs a descriptor and the default soft limit (1024) is below the
    connection limits; systemd keeps the soft limit low only for programs that use
    select(), which asyncio's epoll loop does not (systemd.exec(5), LimitNOFILE=).
    """
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # Refused e.g. by a seccomp filter: the connection limits still protect the daemon.
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    try:
        for item in args.set:
            key, value = parse_assignment(item)
            overrides[key] = value
        for flag, key in (("runtime_dir", "paths.runtime_dir"), ("state_dir", "paths.state_dir"),
                          ("socket", "paths.control_socket"), ("profile", "platform.profile"),
                          ("qemu_version", "qmp.qemu_version"), ("log_level", "log.level"),
                          ("max_clients", "qmp.max_clients_per_socket"),
                          ("http", "http.listen")):
            value = getattr(args, flag)
            if value is not None:
                overrides[key] = value
        config = load(args.config, overrides=overrides)
    except ConfigError as e:
        print(f"sevd: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(config.to_toml())
        return 0
    if args.check_config:
        print(f"sevd: configuration OK ({config.source})")
        return 0
    import asyncio

    from sevd.commands.schema import SchemaError
    from sevd.daemon import Daemon, StartupError
    from sevd.systemd import setup_logging

    setup_logging(config["log.level"])
    raise_fd_limit()
    try:
        daemon = Daemon(config, validate_returns=args.validate_returns)
        return asyncio.run(daemon.run())
    except (StartupError, SchemaError) as e:
        print(f"sevd: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


if __name__ == "__main__":
    sys.exit(main())
