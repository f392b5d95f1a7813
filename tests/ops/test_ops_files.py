"""sevd.files: client-named files are read only from the allowed directories, dumps written
only into the dump directory; `..`, symlink escapes, device files, FIFOs, directories and
hard links are refused with texts that say why."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from ops_support import drop_privileges, short_tmpdir

from sevd.domain.errors import DomainError
from sevd.files import (
    DUMP_MODE,
    FileAccessError,
    dump_path,
    ensure_dir,
    open_for_read,
    open_for_write,
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    fw = tmp_path / "fw"
    fw2 = tmp_path / "fw2"
    outside = tmp_path / "outside"
    dumps = tmp_path / "dumps"
    for d in (fw, fw2, outside, dumps):
        d.mkdir()
    (fw / "OVMF.fd").write_bytes(b"firmware")
    (fw / "sub").mkdir()
    (fw / "sub" / "nested.bin").write_bytes(b"nested")
    (fw2 / "only2.bin").write_bytes(b"second")
    (fw2 / "OVMF.fd").write_bytes(b"shadowed")
    (outside / "secret").write_bytes(b"secret")
    return {"fw": fw, "fw2": fw2, "outside": outside, "dumps": dumps, "base": tmp_path}


def allowed(t: dict[str, Path]) -> list[Path]:
    return [t["fw"], t["fw2"]]


# -- reading ---------------------------------------------------------------------------------


def test_reads_absolute_and_relative_names(tree: dict[str, Path]) -> None:
    assert open_for_read(str(tree["fw"] / "OVMF.fd"), allowed(tree)) == b"firmware"
    assert open_for_read(str(tree["fw"] / "sub" / "nested.bin"), allowed(tree)) == b"nested"
    # Relative names search the directories in order: the first match wins.
    assert open_for_read("OVMF.fd", allowed(tree)) == b"firmware"
    assert open_for_read("only2.bin", allowed(tree)) == b"second"
    assert open_for_read("sub/nested.bin", allowed(tree)) == b"nested"
    assert open_for_read("./OVMF.fd", allowed(tree)) == b"firmware"


def test_outside_the_allowed_directories(tree: dict[str, Path]) -> None:
    with pytest.raises(FileAccessError) as e:
        open_for_read("/etc/passwd", allowed(tree))
    assert str(e.value) == (f"File '/etc/passwd' is outside the allowed directories "
                            f"({tree['fw']}, {tree['fw2']})")
    # A missing file outside gets the same answer: no probing what exists elsewhere.
    with pytest.raises(FileAccessError, match="outside the allowed directories"):
        open_for_read(str(tree["outside"] / "nope"), allowed(tree))
    # A sibling whose name starts like an allowed directory is not inside it.
    sibling = tree["base"] / "fwx"
    sibling.mkdir()
    (sibling / "f").write_bytes(b"x")
    with pytest.raises(FileAccessError, match="outside"):
        open_for_read(str(sibling / "f"), [tree["fw"]])


def test_dotdot_is_refused_even_when_it_stays_inside(tree: dict[str, Path]) -> None:
    for name in ("../outside/secret", str(tree["fw"] / ".." / "outside" / "secret"),
                 str(tree["fw"] / "sub" / ".." / "OVMF.fd"), "sub/../OVMF.fd"):
        with pytest.raises(FileAccessError, match=r"must not contain '\.\.'"):
            open_for_read(name, allowed(tree))


def test_symlink_escape_is_refused(tree: dict[str, Path]) -> None:
    (tree["fw"] / "evil").symlink_to(tree["outside"] / "secret")
    with pytest.raises(FileAccessError) as e:
        open_for_read("evil", allowed(tree))
    assert str(e.value) == (f"File 'evil' resolves to '{tree['outside'] / 'secret'}', which "
                            f"is outside the allowed directories ({tree['fw']}, {tree['fw2']})")
    # A symlinked directory pointing out is an escape too.
    (tree["fw"] / "dir").symlink_to(tree["outside"])
    with pytest.raises(FileAccessError, match="outside the allowed"):
        open_for_read(str(tree["fw"] / "dir" / "secret"), allowed(tree))


def test_symlinks_that_stay_inside_are_followed(tree: dict[str, Path]) -> None:
    # Debian: OVMF_CODE.ms.fd -> OVMF_CODE.secboot.fd, /usr/share/qemu/OVMF.fd -> ../ovmf/.
    (tree["fw"] / "alias.fd").symlink_to("OVMF.fd")
    (tree["fw"] / "cross.bin").symlink_to(tree["fw2"] / "only2.bin")
    assert open_for_read("alias.fd", allowed(tree)) == b"firmware"
    assert open_for_read("cross.bin", allowed(tree)) == b"second"


def test_allowed_directory_reached_through_a_symlink(tree: dict[str, Path]) -> None:
    link = tree["base"] / "fwlink"
    link.symlink_to(tree["fw"])
    assert open_for_read(str(link / "OVMF.fd"), [link]) == b"firmware"
    assert open_for_read(str(tree["fw"] / "OVMF.fd"), [link]) == b"firmware"


def test_special_files_are_refused(tree: dict[str, Path]) -> None:
    fifo = tree["fw"] / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileAccessError, match="'pipe' is a FIFO, not a regular file"):
        open_for_read("pipe", allowed(tree))  # and it did not block on the FIFO
    with pytest.raises(FileAccessError, match="is a directory, not a regular file"):
        open_for_read("sub", allowed(tree))
    with pytest.raises(FileAccessError, match="is a directory"):
        open_for_read(str(tree["fw"]), allowed(tree))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree["fw"] / "s"))
    with pytest.raises(FileAccessError, match="is a socket"):
        open_for_read("s", allowed(tree))
    sock.close()
    # A device node: /dev/null reached from an allowed /dev (and through a symlink inside).
    with pytest.raises(FileAccessError, match="'/dev/null' is a character device"):
        open_for_read("/dev/null", ["/dev"])
    (tree["fw"] / "null").symlink_to("/dev/null")
    with pytest.raises(FileAccessError, match="outside"):
        open_for_read("null", allowed(tree))


def test_missing_files(tree: dict[str, Path]) -> None:
    with pytest.raises(FileAccessError) as e:
        open_for_read(str(tree["fw"] / "nope.fd"), allowed(tree))
    assert str(e.value) == f"Could not open '{tree['fw'] / 'nope.fd'}': No such file or directory"
    with pytest.raises(FileAccessError, match="No such file or directory in the allowed"):
        open_for_read("nope.fd", allowed(tree))
    (tree["fw"] / "dangling").symlink_to("gone")
    with pytest.raises(FileAccessError, match="Could not open 'dangling'"):
        open_for_read("dangling", allowed(tree))


def test_bad_names(tree: dict[str, Path]) -> None:
    with pytest.raises(FileAccessError, match="must not be empty"):
        open_for_read("", allowed(tree))
    with pytest.raises(FileAccessError, match="NUL"):
        open_for_read("a\0b", allowed(tree))
    with pytest.raises(FileAccessError, match="none configured"):
        open_for_read("/etc/passwd", [])


def test_size_limit(tree: dict[str, Path]) -> None:
    (tree["fw"] / "big").write_bytes(b"x" * 1000)
    assert len(open_for_read("big", allowed(tree), max_size=1000)) == 1000
    with pytest.raises(FileAccessError, match="1000 bytes, over the limit of 999 bytes"):
        open_for_read("big", allowed(tree), max_size=999)


def test_unreadable_file() -> None:
    # Root reads mode-0 files, so the reader drops to nobody in a forked child.
    base = short_tmpdir()
    try:
        base.chmod(0o755)
        (base / "locked").write_bytes(b"x")
        (base / "locked").chmod(0o600)
        (base / "open").write_bytes(b"y")
        (base / "open").chmod(0o644)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(r)
                drop_privileges()
                out = [open_for_read("open", [base]).decode()]
                try:
                    open_for_read("locked", [base])
                except FileAccessError as e:
                    out.append(str(e))
                os.write(w, "\n".join(out).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            result = f.read().split("\n")
        os.waitpid(pid, 0)
        assert result == ["y", "Could not open 'locked': Permission denied"]
    finally:
        shutil.rmtree(base)


def test_error_is_a_domain_error() -> None:
    # The commands layer turns DomainError into GenericError with the text unchanged.
    assert issubclass(FileAccessError, DomainError)


# -- writing ---------------------------------------------------------------------------------


def test_write_relative_and_absolute(tree: dict[str, Path]) -> None:
    d = tree["dumps"]
    with open_for_write("mem.bin", d) as f:
        f.write(b"dump1")
    assert (d / "mem.bin").read_bytes() == b"dump1"
    assert stat.S_IMODE((d / "mem.bin").stat().st_mode) == DUMP_MODE & ~_umask()
    with open_for_write(str(d / "mem.bin"), d) as f:  # truncates
        f.write(b"2")
    assert (d / "mem.bin").read_bytes() == b"2"
    (d / "sub").mkdir()
    with open_for_write("sub/x", d) as f:
        f.write(b"x")
    assert (d / "sub" / "x").read_bytes() == b"x"
    assert dump_path("sub/x", d) == str(d / "sub" / "x")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_write_creates_the_dump_dir(tree: dict[str, Path]) -> None:
    d = tree["base"] / "new" / "dumps"
    with open_for_write("a", d) as f:
        f.write(b"a")
    assert stat.S_IMODE(d.stat().st_mode) == 0o750
    # ...but not subdirectories a client names.
    with pytest.raises(FileAccessError, match="Could not open 'no/such': No such file"):
        open_for_write("no/such", d)


def test_write_refusals(tree: dict[str, Path]) -> None:
    d = tree["dumps"]
    with pytest.raises(FileAccessError, match="must not contain"):
        open_for_write("../outside/x", d)
    with pytest.raises(FileAccessError) as e:
        open_for_write(str(tree["outside"] / "x"), d)
    assert str(e.value) == f"File '{tree['outside'] / 'x'}' is outside the dump directory ({d})"
    assert not (tree["outside"] / "x").exists()
    with pytest.raises(FileAccessError, match="outside the dump directory"):
        open_for_write(str(d), d)
    # A symlink planted in the dump directory is not followed, wherever it points.
    (d / "link").symlink_to(tree["outside"] / "secret")
    with pytest.raises(FileAccessError, match="'link' is a symbolic link"):
        open_for_write("link", d)
    assert (tree["outside"] / "secret").read_bytes() == b"secret"
    (d / "dirlink").symlink_to(tree["outside"])
    with pytest.raises(FileAccessError, match="outside the dump directory"):
        open_for_write("dirlink/x", d)
    os.mkfifo(d / "fifo")
    with pytest.raises(FileAccessError, match="is a FIFO"):
        open_for_write("fifo", d)
    (d / "adir").mkdir()
    with pytest.raises(FileAccessError, match="is a directory"):
        open_for_write("adir", d)
    # A hard link to a file elsewhere must not be overwritten through the dump directory.
    os.link(tree["outside"] / "secret", d / "hard")
    with pytest.raises(FileAccessError, match="other hard links"):
        open_for_write("hard", d)
    assert (tree["outside"] / "secret").read_bytes() == b"secret"


def test_swapped_directory_is_not_followed(tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    # Race: the path checks out, then a directory becomes a symlink before the open.
    # The O_NOFOLLOW walk refuses it instead of following it out.
    import sevd.files as files

    d = tree["dumps"]
    (d / "sub").mkdir()
    real_dump_path = files.dump_path

    def racy(name: str, dump_dir: str | os.PathLike[str]) -> str:
        result = real_dump_path(name, dump_dir)
        (d / "sub").rmdir()
        (d / "sub").symlink_to(tree["outside"])
        return result

    monkeypatch.setattr(files, "dump_path", racy)
    with pytest.raises(FileAccessError, match="changed while it was being opened"):
        open_for_write("sub/x", d)
    assert not (tree["outside"] / "x").exists()


def test_swapped_file_is_not_followed(tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    import sevd.files as files

    real = files._resolve_for_read

    def racy(name: str, allowed_dirs: list[str]) -> tuple[str, str]:
        result = real(name, allowed_dirs)
        (tree["fw"] / "OVMF.fd").unlink()
        (tree["fw"] / "OVMF.fd").symlink_to(tree["outside"] / "secret")
        return result

    monkeypatch.setattr(files, "_resolve_for_read", racy)
    with pytest.raises(FileAccessError, match="is a symbolic link"):
        open_for_read("OVMF.fd", allowed(tree))


def test_ensure_dir_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        ensure_dir(tmp_path / "a" / "b", 0o750)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o750
    (tmp_path / "c").mkdir(mode=0o700)
    ensure_dir(tmp_path / "c", 0o750)  # existing: left alone
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
