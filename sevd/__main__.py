"""`sevd` / `python -m sevd`: parse flags, load the configuration, run the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sevd import __version__
from sevd.config import LOG_LEVELS, PROFILES, ConfigError, load


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sevd", description="Simulated AMD SEV guests behind "
                                "QEMU's monitor protocol (QMP).")
    p.add_argument("--version", action="version", version=f"sevd {__version__}")
    p.add_argument("-c", "--config", help="TOML configuration file")
    p.add_argument("--runtime-dir", help="directory for sockets")
    p.add_argument("--state-dir", help="directory for persistent state")
    p.add_argument("--socket", help="control socket path")
    p.add_argument("--profile", choices=PROFILES, help="simulated EPYC generation")
    p.add_argument("--qemu-version", help="emulated QEMU version in the greeting")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--max-clients", type=int, help="clients per socket")
    p.add_argument("--check-config", action="store_true",
                   help="check the configuration and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML and exit")
    p.add_argument("--validate-returns", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    for flag, key in (("runtime_dir", "paths.runtime_dir"), ("state_dir", "paths.state_dir"),
                      ("socket", "paths.control_socket"), ("profile", "platform.profile"),
                      ("qemu_version", "qmp.qemu_version"), ("log_level", "log.level"),
                      ("max_clients", "qmp.max_clients_per_socket")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    try:
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
    from sevd.daemon import Daemon, StartupError, setup_logging

    setup_logging(config["log.level"])
    try:
        daemon = Daemon(config, validate_returns=args.validate_returns)
        return asyncio.run(daemon.run())
    except StartupError as e:
        print(f"sevd: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
