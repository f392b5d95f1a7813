"""Files that clients name: where the daemon may read them from and write them to.

A QMP client can name files — a firmware image, a guest owner's session or DH certificate
file, a `memsave`/`pmemsave` dump. The daemon may run with more rights than the client, so a
name is only honoured inside the configured directories (`paths.firmware_dirs` for reading,
`paths.dump_dir` for writing):

- a name containing a `..` component is refused outright, before any lookup;
- the name is resolved (symlinks included) and must land inside an allowed directory, so a
  symlink pointing out of it is refused like the target itself; symlinks that stay inside
  (Debian's `OVMF_CODE.ms.fd -> OVMF_CODE.secboot.fd`) are fine;
- the resolved path is then opened one component at a time from the allowed directory with
  `O_NOFOLLOW`, so a directory or file swapped for a symlink after the check is refused
  rather than followed (the check and the open cannot be raced apart);
- only regular files are read or written: directories, devices, FIFOs and sockets are
  refused. The final file is first opened with `O_PATH` (which has no side effects, not even
  for a FIFO or a device) and its type checked before it is opened for real;
- a dump never overwrites a file that has other hard links (it could be a link to a file
  outside the dump directory).

Relative names: for reading, the allowed directories are searched in order, like a search
path (`OVMF_CODE.fd` finds `/usr/share/OVMF/OVMF_CODE.fd`); for writing, they are relative to
the dump directory, as the issue and README say.

Errors are `FileAccessError`, a `DomainError`, so the commands layer turns them into a
GenericError carrying the text unchanged. This module imports nothing else from sevd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sevd.domain.errors import DomainError

DEFAULT_MAX_READ = 256 << 20  # a firmware image is a few MiB; an initrd may be ~100 MiB
DUMP_MODE = 0o640             # decrypted guest memory: owner and the sevd group only
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileAccessError(DomainError):
    """A client-named file that may not, or cannot, be opened; the text is for the client."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _check_name(name: str) -> None:
    if not name:
        raise FileAccessError("File name must not be empty")
    if "\0" in name:
        raise FileAccessError("File name must not contain a NUL byte")
    if ".." in Path(name).parts:
        raise FileAccessError(f"File name '{name}' must not contain '..'")


def _listing(dirs: Sequence[str | os.PathLike[str]]) -> str:
    return ", ".join(str(d) for d in dirs) or "none configured"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _os_error(name: str, e: OSError) -> FileAccessError:
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        # O_NOFOLLOW met a symlink that was not there when the path was resolved.
        return FileAccessError(f"File '{name}' changed while it was being opened "
                               "(a symbolic link appeared); refused")
    return FileAccessError(f"Could not open '{name}': {e.strerror}")


def _walk(name: str, root: str, rel: str) -> tuple[int, str]:
    """Open the directories of `rel` beneath `root` without following symlinks.

    Returns an O_PATH descriptor of the last directory and the final component's name.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as e:
        raise _os_error(name, e) from None
    try:
        for part in parts[:-1]:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as e:
        os.close(fd)
        raise _os_error(name, e) from None
    return fd, parts[-1] if parts else "."


def _reopen(fd: int, flags: int) -> int:
    """Open the file an O_PATH descriptor refers to (the same inode, no path lookup)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def _resolve_for_read(name: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(resolved path, allowed root containing it) or FileAccessError."""
    roots = [os.path.realpath(d) for d in allowed]
    candidates = [name] if os.path.isabs(name) else [os.path.join(d, name) for d in allowed]
    for candidate in candidates:
        if not os.path.lexists(candidate):
            continue
        resolved = os.path.realpath(candidate)
        for root in roots:
            if _inside(resolved, root):
                return resolved, root
        shown = f"File '{name}' is" if resolved == os.path.normpath(candidate) else \
            f"File '{name}' resolves to '{resolved}', which is"
        raise FileAccessError(f"{shown} outside the allowed directories ({_listing(allowed)})")
    if os.path.isabs(name):
        resolved = os.path.realpath(name)
        if not any(_inside(resolved, r) for r in roots):
            raise FileAccessError(f"File '{name}' is outside the allowed directories "
                                  f"({_listing(allowed)})")
        raise FileAccessError(f"Could not open '{name}': No such file or directory")
    raise FileAccessError(f"Could not open '{name}': No such file or directory in the "
                          f"allowed directories ({_listing(allowed)})")


def open_for_read(name: str, allowed_dirs: Sequence[str | os.PathLike[str]], *,
                  max_size: int = DEFAULT_MAX_READ) -> bytes:
    """The contents of the regular file `name`, which must lie in one of `allowed_dirs`."""
    _check_name(name)
    allowed = [os.path.abspath(d) for d in allowed_dirs]
    resolved, root = _resolve_for_read(name, allowed)
    dfd, last = _walk(name, root, os.path.relpath(resolved, root))
    try:
        try:
            pfd = os.open(last, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise _os_error(name, e) from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise FileAccessError(f"File '{name}' is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_size:
            raise FileAccessError(f"File '{name}' is {st.st_size} bytes, over the limit of "
                                  f"{max_size} bytes")
        try:
            fd = _reopen(pfd, os.O_RDONLY)
        except OSError as e:
            raise _os_error(name, e) from None
    finally:
        os.close(pfd)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_size + 1)
    if len(data) > max_size:  # it grew after fstat
        raise FileAccessError(f"File '{name}' is over the limit of {max_size} bytes")
    return data


def dump_path(name: str, dump_dir: str | os.PathLike[str]) -> str:
    """Where a dump named `name` goes (checked like open_for_write, without opening)."""
    _check_name(name)
    root = os.path.realpath(dump_dir)
    path = name if os.path.isabs(name) else os.path.join(root, name)
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if os.path.basename(path) in ("", ".") or not _inside(parent, root):
        raise FileAccessError(f"File '{name}' is outside the dump directory ({dump_dir})")
    return os.path.join(parent, os.path.basename(path))


def open_for_write(name: str, dump_dir: str | os.PathLike[str]) -> BinaryIO:
    """A new or truncated regular file `name` in `dump_dir` (relative names go there).

    The dump directory is created (mode 0750) when missing; subdirectories are not.
    """
    root = os.path.realpath(dump_dir)
    ensure_dir(root, 0o750)
    target = dump_path(name, root)
    dfd, last = _walk(name, root, os.path.relpath(target, root))
    try:
        fd = _open_dump(name, dfd, last)
    finally:
        os.close(dfd)
    return os.fdopen(fd, "wb")


def _open_dump(name: str, dfd: int, last: str) -> int:
    for _ in range(3):  # the file may appear or vanish between the attempts
        try:
            return os.open(last, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                           os.O_CLOEXEC, DUMP_MODE, dir_fd=dfd)
        except FileExistsError:
            pass
        except OSError as e:
            raise _os_error(name, e) from None
        try:
            pfd = os.open(last, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _os_error(name, e) from None
        try:
            st = os.fstat(pfd)
            if not stat.S_ISREG(st.st_mode):
                raise FileAccessError(f"File '{name}' is {_kind(st.st_mode)}, "
                                      "not a regular file")
            if st.st_nlink != 1:
                raise FileAccessError(f"File '{name}' has other hard links; refusing to "
                                      "overwrite it")
            try:
                return _reopen(pfd, os.O_WRONLY | os.O_TRUNC)
            except OSError as e:
                raise _os_error(name, e) from None
        finally:
            os.close(pfd)
    raise FileAccessError(f"File '{name}' keeps changing; refused")


def ensure_dir(path: str | os.PathLike[str], mode: int) -> None:
    """Create `path` (and missing parents) so that the directory itself has exactly `mode`.

    The mode is set explicitly after creation, since mkdir's is filtered by the umask; an
    existing directory is left as it is (systemd, or the administrator, chose its mode).
    """
    p = Path(path)
    if p.is_dir():
        return
    p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        p.mkdir(mode=mode)
        os.chmod(p, mode)
