"""The daemon's state directory: platform identity and persistent guest definitions.

Every file is written atomically (a temporary file in the same directory, fsync, rename,
fsync of the directory) with mode 0600, so a crash at any moment leaves either the old or
the new content, never a torn file. Guest definitions are the `guest-add` arguments as
JSON, one file per guest, so a restart launches them anew exactly as they were asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("sevd.state")

IDENTITY_FILE = "platform-{profile}.identity"  # one per host profile
GUESTS_DIR = "guests"


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (it lives in the directory's entries)."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.guests = root / GUESTS_DIR

    def prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.guests.mkdir(mode=0o700, exist_ok=True)
        # Temporary files of a write that a crash interrupted.
        for d in (self.root, self.guests):
            for tmp in d.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def identity_path(self, profile: str) -> Path:
        return self.root / IDENTITY_FILE.format(profile=profile)

    def load_identity(self, profile: str) -> bytes | None:
        try:
            return self.identity_path(profile).read_bytes()
        except FileNotFoundError:
            return None

    def save_identity(self, profile: str, data: bytes) -> None:
        write_atomic(self.identity_path(profile), data)

    def save_guest(self, name: str, args: dict[str, Any]) -> None:
        write_atomic(self.guests / f"{name}.json",
                     json.dumps(args, indent=2, sort_keys=True).encode())

    def delete_guest(self, name: str) -> bool:
        """Delete a definition; False when there was none."""
        path = self.guests / f"{name}.json"
        if path.parent != self.guests:  # defence in depth: callers check names first
            raise ValueError(f"not a guest name: {name!r}")
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        # guest-remove replies after this: the definition must not come back after a crash.
        fsync_dir(self.guests)
        return True

    def load_guests(self) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.guests.glob("*.json")):
            try:
                args = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                log.error("ignoring unreadable guest definition %s: %s", f, e)
                continue
            if isinstance(args, dict) and args.get("name") == f.stem:
                out.append(args)
            else:
                log.error("ignoring guest definition %s: it does not define guest %s",
                          f, f.stem)
        return out
