"""``sevkbs`` (and ``sevctl owner …``): run the key broker, check its configuration.

``serve --config FILE [--listen ADDR] [--log-level L]``
    Serve until SIGTERM/SIGINT; prints ``sevkbs listening on ADDR`` once it listens.
``check --config FILE``
    Load the configuration (files read, digests computed) and list the workloads — never
    the secrets — then exit 0, or print the problem and exit 2.
``digest --firmware F [--kernel K --initrd I --cmdline C] [--cpus N --vcpu-type T]``
    Print the expected launch digest (base64) for a workload's ``digests``.

Exit status: 0 done, 1 cannot serve (e.g. the address is in use), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import signal
import sys
from pathlib import Path

from sevkbs.config import ConfigError, load_config

__all__ = ["add_commands", "main"]


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.listen:
            from sevkbs.config import check_listen

            problem = check_listen(args.listen)
            if problem:
                raise ConfigError(f"--listen: {problem}")
            config.listen = args.listen
    except ConfigError as e:
        print(f"sevkbs: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from sevkbs.broker import Broker
    from sevkbs.server import serve

    broker = Broker(config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(broker, config.listen, stop=stop,
                    ready=lambda a: print(f"sevkbs listening on {a}", flush=True))

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"sevkbs: cannot listen on {config.listen}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"sevkbs: {e}", file=sys.stderr)
        return 2
    print(f"sevkbs: configuration OK ({config.source}): listen {config.listen}, "
          f"root {'pinned' if config.ark is not None else 'NOT pinned'}")
    for w in config.workloads.values():
        print(f"  {w.id}: policies {', '.join(f'0x{p:x}' for p in sorted(w.policies))}; "
              f"{len(w.digests)} digest(s); secrets {', '.join(str(g) for g in w.secrets)}")
    return 0


def _digest(args: argparse.Namespace) -> int:
    from sevowner.measurement import expected_launch_digest

    from sevd.formats.ovmf import sev_es_reset_eip
    from sevd.formats.vmsa import CPU_SIGNATURES, vmsa_pages

    try:
        fw = Path(args.firmware).read_bytes()
        kernel = Path(args.kernel).read_bytes() if args.kernel else None
        initrd = Path(args.initrd).read_bytes() if args.initrd else None
        vmsas: list[bytes] = []
        if args.cpus is not None or args.vcpu_type is not None:
            vmsas = vmsa_pages(args.cpus or 1, sev_es_reset_eip(fw) or 0,
                               CPU_SIGNATURES[args.vcpu_type or "EPYC"])
        digest = expected_launch_digest(fw, kernel, initrd, args.cmdline, vmsas)
    except (OSError, ValueError, KeyError) as e:
        print(f"sevkbs: {e}", file=sys.stderr)
        return 1
    print(base64.b64encode(digest).decode())
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``serve``, ``check`` and ``digest`` (each sets ``func(args) -> int``)."""
    s = sub.add_parser("serve", help="run the key broker (simple-kbs's API over HTTP/JSON)")
    s.add_argument("--config", "-c", required=True, help="the broker's TOML file")
    s.add_argument("--listen", help="unix:PATH or tcp:127.0.0.1:PORT (overrides the file)")
    s.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    s.set_defaults(func=_serve)
    c = sub.add_parser("check", help="check the broker's configuration")
    c.add_argument("--config", "-c", required=True)
    c.set_defaults(func=_check)
    d = sub.add_parser("digest", help="print a boot's expected launch digest (base64)")
    d.add_argument("--firmware", "--ovmf", required=True)
    d.add_argument("--kernel")
    d.add_argument("--initrd")
    d.add_argument("--cmdline")
    d.add_argument("--cpus", type=int, help="SEV-ES: vCPUs (their VMSAs are measured)")
    d.add_argument("--vcpu-type", help="SEV-ES: QEMU CPU model, e.g. EPYC-Milan")
    d.set_defaults(func=_digest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sevkbs", description="A guest owner's key broker for "
                                "SEV pre-attestation (simple-kbs's API over HTTP/JSON).")
    add_commands(p.add_subparsers(dest="verb", required=True, metavar="VERB"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
