"""`sevctl`: the command line of sevd (guests, raw QMP and HMP) and the guest owner's verbs.

Exit status 0 on success; on an error one line on stderr and 1 (2 when sevd cannot be
reached, as with a bad usage). `--json` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sys
from typing import Any

from sevctl.qmpclient import CliError, Connection, default_socket, guest_socket

_SIZE = re.compile(r"(\d+)([KMGT]i?B?)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(text: str) -> int:
    """Bytes, or a number with K/M/G/T (binary units, as QEMU's -m)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size '{text}' (e.g. 268435456, 512M, 4G)")
    return int(m.group(1)) * _UNITS[(m.group(2) or "")[:1].lower()]


def _emit(args: argparse.Namespace, value: Any, human: str) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    elif human:
        print(human)


def _fmt_mem(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def _table(guests: list[dict[str, Any]]) -> str:
    if not guests:
        return "no guests"
    rows = [("NAME", "STATUS", "MEMORY", "CPUS", "SOCKET")]
    rows += [(g["name"], g["status"], _fmt_mem(g["memory"]), str(g["cpus"]), g["socket"])
             for g in guests]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4]
                     for r in rows)


async def guest_list(args: argparse.Namespace) -> int:
    async with Connection(args.socket) as c:
        guests = await c.execute("query-guests")
    _emit(args, guests, _table(guests))
    return 0


async def guest_add(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": args.name}
    if args.memory is not None:
        spec["memory"] = args.memory
    if args.cpus is not None:
        spec["cpus"] = args.cpus
    if args.uuid:
        spec["uuid"] = args.uuid
    if args.start:
        spec["start"] = True
    for flag, key in (("firmware", "firmware"), ("kernel", "kernel"), ("initrd", "initrd"),
                      ("append", "append")):
        if getattr(args, flag) is not None:
            spec[key] = getattr(args, flag)
    if args.persistent:
        spec["persistent"] = True
    if args.no_debug:
        spec["security-policy"] = {"debug": False}
    async with Connection(args.socket) as c:
        if args.sev or args.session or args.policy is not None:
            spec["sev-guest"] = await _sev_guest(c, args)
        info = await c.execute("guest-add", spec)
    _emit(args, info, f"guest {info['name']} added ({info['status']}), "
                      f"monitor socket {info['socket']}")
    return 0


async def _sev_guest(c: Connection, args: argparse.Namespace) -> dict[str, Any]:
    """The sev-guest object; cbitpos and reduced-phys-bits come from the host's
    query-sev-capabilities unless given, as libvirt fills them."""
    sev: dict[str, Any] = {"policy": args.policy if args.policy is not None else 1}
    if args.cbitpos is None or args.reduced_phys_bits is None:
        caps = await c.execute("query-sev-capabilities")
    sev["cbitpos"] = args.cbitpos if args.cbitpos is not None else caps["cbitpos"]
    sev["reduced-phys-bits"] = (args.reduced_phys_bits if args.reduced_phys_bits is not None
                                else caps["reduced-phys-bits"])
    if args.handle is not None:
        sev["handle"] = args.handle
    if args.kernel_hashes:
        sev["kernel-hashes"] = True
    if args.session:
        # virtee's `sevctl session` files, read here and sent inline: they live with the
        # guest owner, not in the daemon's firmware directories.
        for key, suffix in (("dh-cert", "_godh.b64"), ("session", "_session.b64")):
            path = args.session + suffix
            try:
                with open(path) as f:
                    sev[key] = f.read().strip()
            except OSError as e:
                raise CliError(f"cannot read {path}: {e.strerror}") from None
    return sev


def _int(text: str) -> int:
    return int(text, 0)


async def guest_remove(args: argparse.Namespace) -> int:
    async with Connection(args.socket) as c:
        await c.execute("guest-remove", {"name": args.name})
    _emit(args, {}, f"guest {args.name} removed")
    return 0


async def _target(args: argparse.Namespace) -> str:
    return await guest_socket(args.socket, args.guest) if args.guest else args.socket


async def qmp(args: argparse.Namespace) -> int:
    try:
        cmd_args = json.loads(args.arguments) if args.arguments else None
    except ValueError as e:
        raise CliError(f"arguments are not JSON: {e}") from None
    if cmd_args is not None and not isinstance(cmd_args, dict):
        raise CliError("arguments must be a JSON object")
    async with Connection(await _target(args)) as c:
        result = await c.execute(args.command, cmd_args)
    if args.json or not isinstance(result, str):
        print(json.dumps(result, indent=2))
    else:
        print(result)
    return 0


async def hmp(args: argparse.Namespace) -> int:
    async with Connection(await _target(args)) as c:
        out = await c.execute("human-monitor-command", {"command-line": args.line})
    if args.json:
        print(json.dumps(out))
    else:
        sys.stdout.write(out.replace("\r\n", "\n"))
    return 0


async def _certificates(control: str) -> dict[str, bytes]:
    async with Connection(control) as c:
        certs = await c.execute("query-sev-certificates")
    return {k: base64.b64decode(v) for k, v in certs.items()}


def fetch_chain(args: argparse.Namespace) -> bytes:
    """The platform's full chain PDH‖PEK‖OCA‖CEK‖ASK‖ARK, from sevd (for `sevctl verify`)."""
    c = asyncio.run(_certificates(args.socket or default_socket()))
    return c["pdh"] + c["pek"] + c["oca"] + c["cek"] + c["ask"] + c["ark"]


async def export(args: argparse.Namespace) -> int:
    """virtee's `sevctl export [--full] PATH`: the chain as one file."""
    c = await _certificates(args.socket)
    data = c["pdh"] + c["pek"] + c["oca"] + c["cek"]
    if args.full:
        data += c["ask"] + c["ark"]
    with open(args.path, "wb") as f:
        f.write(data)
    _emit(args, {"path": args.path, "bytes": len(data)},
          f"wrote {'full ' if args.full else ''}certificate chain to {args.path}")
    return 0


async def firmware_export(args: argparse.Namespace) -> int:
    """Write sevd's built-in firmware image, so owners can compute its launch digest."""
    from importlib import resources

    data = (resources.files("sevd") / "data" / "sevd-builtin.fd").read_bytes()
    with open(args.path, "wb") as f:
        f.write(data)
    _emit(args, {"path": args.path, "bytes": len(data)},
          f"wrote sevd's built-in firmware ({len(data)} bytes) to {args.path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sevctl", description="Control sevd and act as an SEV "
                                "guest owner.")
    p.add_argument("--socket", default=None,
                   help="sevd's control socket (default: $SEVD_SOCKET, then sevd's default)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    guest = sub.add_parser("guest", help="list, add and remove guests")
    gsub = guest.add_subparsers(dest="action", required=True)
    gl = gsub.add_parser("list", help="list guests")
    gl.set_defaults(run=guest_list)
    ga = gsub.add_parser("add", help="add a guest (paused in prelaunch unless --start)")
    ga.add_argument("name")
    ga.add_argument("--memory", type=size, help="RAM, e.g. 512M (default 256M)")
    ga.add_argument("--cpus", type=int)
    ga.add_argument("--uuid")
    ga.add_argument("--start", action="store_true", help="run straight through (no -S)")
    ga.add_argument("--persistent", action="store_true",
                    help="keep the definition and launch it when sevd starts")
    ga.add_argument("--firmware", help="firmware image in sevd's firmware directories")
    ga.add_argument("--kernel")
    ga.add_argument("--initrd")
    ga.add_argument("--append")
    ga.add_argument("--no-debug", action="store_true",
                    help="security policy debug=off: refuse monitor debug access")
    sevg = ga.add_argument_group("SEV", "an SEV guest (QEMU's sev-guest object)")
    sevg.add_argument("--sev", action="store_true", help="launch as an SEV guest")
    sevg.add_argument("--policy", type=_int, help="guest policy (default 0x1; implies --sev)")
    sevg.add_argument("--session", metavar="NAME",
                      help="use NAME_godh.b64 and NAME_session.b64 (sevctl session)")
    sevg.add_argument("--handle", type=_int, help="share the VEK of this firmware handle")
    sevg.add_argument("--cbitpos", type=_int, help="default: the host's")
    sevg.add_argument("--reduced-phys-bits", type=_int, help="default: the host's (1)")
    sevg.add_argument("--kernel-hashes", action="store_true")
    ga.set_defaults(run=guest_add)
    gr = gsub.add_parser("remove", help="remove a guest")
    gr.add_argument("name")
    gr.set_defaults(run=guest_remove)

    q = sub.add_parser("qmp", help="run one QMP command")
    q.add_argument("--guest", help="on this guest's socket instead of the control socket")
    q.add_argument("command")
    q.add_argument("arguments", nargs="?", help="arguments as a JSON object")
    q.set_defaults(run=qmp)

    h = sub.add_parser("hmp", help="run one HMP command line")
    h.add_argument("--guest", help="on this guest's socket instead of the control socket")
    h.add_argument("line")
    h.set_defaults(run=hmp)

    e = sub.add_parser("export", help="export the platform's certificate chain to a file")
    e.add_argument("--full", action="store_true",
                   help="include the (simulated) AMD ASK and ARK")
    e.add_argument("path")
    e.set_defaults(run=export)

    fw = sub.add_parser("firmware", help="sevd's built-in firmware image")
    fsub = fw.add_subparsers(dest="action", required=True)
    fe = fsub.add_parser("export", help="write the built-in image to a file")
    fe.add_argument("path")
    fe.set_defaults(run=firmware_export)

    from sevctl.owner_cli import add_owner_commands
    from sevctl.platform_cli import add_platform_commands

    add_platform_commands(sub)

    add_owner_commands(sub, chain_fetcher=fetch_chain)

    from sevkbs.cli import add_commands as add_broker_commands

    owner = sub.add_parser("owner", help="the guest owner's key broker (serve, check, digest)")
    add_broker_commands(owner.add_subparsers(dest="owner_cmd", required=True, metavar="CMD"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.socket is None:
        args.socket = default_socket()
    try:
        if hasattr(args, "run"):
            return int(asyncio.run(args.run(args)))
        return int(args.func(args))
    except CliError as e:
        print(f"sevctl: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
