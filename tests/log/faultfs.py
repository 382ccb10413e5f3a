"""FaultFS: simulated power loss, and calls made to fail, under ``engine.log.fileio``.

In the spirit of LevelDB's ``fault_injection_test.cc``. Once installed, every
call of :mod:`engine.log.fileio` goes through a :class:`FaultFS`, which performs
it for real and keeps a model of what a power loss would leave of the files
under ``root``. :meth:`FaultFS.power_cut` then rewrites the real files to such
a state, and a test (or a worker process that kills itself right after) reopens
the store to see what recovery makes of it.

The model
---------
* A file (an inode: it follows renames, ``dup`` and every fd opened on it) is
  durable as of its last ``fsync``/``fdatasync``: its whole contents are copied
  then (read just before the real call, so everything written before the call
  is covered; a copy is only kept if the call succeeds). Writes, ``ftruncate``
  and ``O_TRUNC`` after that are lost by a power cut. Files are expected to be
  small (a test store): each sync reads the whole file.
* A directory's entries (files created, renamed, linked or unlinked, and
  directories made in it) are durable as of the last fsync of the directory
  itself (``fileio.fsync_dir`` opens it and fsyncs that fd). A cut undoes the
  later changes: a file created since is gone, an unlinked one is back, and a
  rename reverts to the old name, with the old file (and its synced contents)
  back under the target's name. Syncing a file does not make its name durable.
* ``power_cut(tear=True)`` lets a prefix of the data written past a file's
  synced end survive, cut at a 512-byte boundary (or at the end of the data,
  or not at all); with ``garbage=True`` the sector being written at the cut
  holds random bytes instead. Data before the synced end is never damaged: a
  sector that was synced is treated as written atomically.
* ``fail(call, nth, errno)`` makes the nth call of that name from now on
  raise ``OSError(errno)`` without doing anything (optionally only calls that
  concern a path containing ``path``). The call made to fail is not retried.
* Files and directories under ``root`` that exist when the simulator first
  looks into their directory (or that appear behind its back, through calls
  that bypass fileio) are taken to be durable as they are then.
* After a cut, every fileio call raises ``OSError(EIO)`` (``after_cut="raise"``)
  or blocks forever (``"block"``: the machine is off; a worker process kills
  itself meanwhile).

Not modeled
-----------
Reads (what was written can be read back until the cut; ``mmap`` reads see the
same), writes through ``mmap``, and calls that bypass fileio (their files are
adopted as durable, as above). Unsynced data surviving out of order (a later
sector on disk while an earlier one is not, or zeros in the middle of a file),
and torn writes inside the synced part. What a failed fsync leaves (here:
nothing more becomes durable; real kernels may write some of it or drop the
pages). Short writes. ``O_SYNC``/``O_DSYNC`` (such writes are not durable
here until an fsync). Renaming directories (refused with ``EXDEV``), removing
them, hard links (after a cut they are separate copies), permissions and
times, and a file sync making the file's directory entry durable (ext4 and
xfs usually do; POSIX does not promise it, so neither does this model).
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import random
import shutil
import stat as stat_mod
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from engine.log import fileio

SECTOR = 512


class _File:
    """An inode of a regular file and its contents as of the last sync."""

    __slots__ = ("synced", "synced_version", "version")

    def __init__(self, synced: bytes = b"") -> None:
        self.synced = synced
        self.version = 0  # bumped by every change of the contents
        self.synced_version = 0  # the version ``synced`` was copied at


class _Dir:
    """A directory: its entries now, and as of its last sync."""

    __slots__ = ("current", "durable", "loaded", "synced_version", "version")

    def __init__(self, loaded: bool = True) -> None:
        self.current: dict[str, _File | _Dir] = {}
        self.durable: dict[str, _File | _Dir] = {}
        self.loaded = loaded  # False: not looked into yet (as on disk, all durable)
        self.version = 0
        self.synced_version = 0


_Node = _File | _Dir


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


def _read_fd(fd: int) -> bytes:
    """The contents of the file open as ``fd``, even when it is write-only or unlinked."""
    try:
        return _read_all(fd)
    except OSError as exc:
        if exc.errno != errno_codes.EBADF:
            raise
    rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    try:
        return _read_all(rfd)
    finally:
        os.close(rfd)


def _read_path(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class FaultFS:
    """The simulator. Use as a context manager (installs on entry, uninstalls on exit)
    or call :meth:`install` / :meth:`uninstall`.

    ``hook(name, n)``, if given, runs before every fileio call (outside the
    simulator's lock) with the call's name and its 1-based number among all
    calls since the simulator was made: a worker uses it to cut the power at a
    chosen call.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        hook: Callable[[str, int], None] | None = None,
        after_cut: str = "raise",
        real_sync: bool = True,
    ) -> None:
        if after_cut not in ("raise", "block"):
            raise ValueError(f"after_cut must be 'raise' or 'block', not {after_cut!r}")
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise FileNotFoundError(self.root)
        self.hook = hook
        self.after_cut = after_cut
        self.real_sync = real_sync
        self.calls: Counter[str] = Counter()  # calls made, by name
        self.count = 0  # calls made, all names
        self.is_cut = False
        self._root = _Dir(loaded=False)
        self._fds: dict[int, tuple[_Node, str]] = {}  # fd -> (inode, path it was opened as)
        self._failures: list[list[Any]] = []  # [name, calls to go, errno, path substring]
        self._mu = threading.RLock()  # the model, and the real calls that change it
        self._count_mu = threading.Lock()
        self._off = threading.Event()  # never set: "block" waits on it forever

    # ------------------------------------------------------------ set-up
    def install(self) -> FaultFS:
        fileio.install(**{name: getattr(self, "_" + name) for name in fileio.NAMES})
        return self

    def uninstall(self) -> None:
        fileio.uninstall()

    def __enter__(self) -> FaultFS:
        return self.install()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.uninstall()

    def fail(self, call: str, nth: int = 1, errno: int = errno_codes.EIO, path: str | None = None) -> None:
        """Make the ``nth`` call of ``call`` from now on (among those concerning a
        path that contains ``path``, if given) raise ``OSError(errno)`` instead of
        running."""
        if call not in fileio.NAMES:
            raise ValueError(f"not a fileio call: {call!r}")
        if nth < 1:
            raise ValueError("nth counts from 1")
        with self._count_mu:
            self._failures.append([call, nth, errno, path])

    # ------------------------------------------------------------ the cut
    def power_cut(self, tear: bool = False, rng: random.Random | None = None, garbage: bool = False) -> None:
        """Rewrite the files under ``root`` to what a power loss now could leave
        (see the module docstring); every later fileio call fails or blocks."""
        rng = rng or random.Random()
        with self._mu:
            self._check_power()
            self.is_cut = True
            now: dict[int, bytes] = {}  # id(inode) -> what it holds now, for tears
            if tear:
                for fd, (node, _path) in self._fds.items():
                    if isinstance(node, _File) and id(node) not in now:
                        with contextlib.suppress(OSError):
                            now[id(node)] = _read_fd(fd)
                for path, node in self._walk(self._root, self.root):
                    if id(node) not in now:
                        with contextlib.suppress(OSError):
                            now[id(node)] = _read_path(path)
            self._restore(self._root, self.root, now, tear, rng, garbage)

    def _walk(self, d: _Dir, path: str) -> Iterator[tuple[str, _File]]:
        """The files reachable now under ``d``, with their paths."""
        if not d.loaded:
            return
        for name, node in d.current.items():
            full = os.path.join(path, name)
            if isinstance(node, _Dir):
                yield from self._walk(node, full)
            else:
                yield full, node

    def _restore(
        self, d: _Dir, path: str, now: dict[int, bytes], tear: bool, rng: random.Random, garbage: bool
    ) -> None:
        if not d.loaded:  # never looked into: nothing changed through fileio
            return
        for name in sorted(set(d.current) | set(d.durable)):
            full = os.path.join(path, name)
            old, new = d.current.get(name), d.durable.get(name)
            if isinstance(new, _Dir):
                if old is not new or not os.path.isdir(full):
                    _remove(full)
                    os.makedirs(full)
                self._restore(new, full, now, tear, rng, garbage)
                continue
            _remove(full)
            if new is not None:
                data = self._survivor(new, now.get(id(new)) if tear else None, rng, garbage)
                fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)

    @staticmethod
    def _survivor(node: _File, current: bytes | None, rng: random.Random, garbage: bool) -> bytes:
        """A file's contents after the cut: the synced contents, plus with a tear
        a sector-aligned prefix of the data written past their end."""
        synced = node.synced
        if current is None or len(current) <= len(synced):
            return synced
        first = (len(synced) // SECTOR + 1) * SECTOR
        keep = rng.choice([len(synced), *range(first, len(current), SECTOR), len(current)])
        data = synced + current[len(synced) : keep]
        if garbage and keep < len(current):
            end = min((keep // SECTOR + 1) * SECTOR, len(current))
            data += rng.randbytes(end - keep)
        return data

    # ------------------------------------------------------- bookkeeping
    def _check_power(self) -> None:
        if self.is_cut:
            if self.after_cut == "block":
                self._off.wait()
            raise OSError(errno_codes.EIO, "the power is off (FaultFS.power_cut)")

    def _enter(self, name: str, target: str | None) -> None:
        """Before each call: power, count, hook, failures (``target``: the path concerned)."""
        self._check_power()
        with self._count_mu:
            self.count += 1
            self.calls[name] += 1
            n = self.count
        if self.hook is not None:
            self.hook(name, n)
        self._check_power()
        with self._count_mu:
            due = None
            for rule in self._failures:
                if rule[0] == name and (rule[3] is None or (target is not None and rule[3] in target)):
                    rule[1] -= 1
                    if rule[1] == 0 and due is None:
                        due = rule
            if due is not None:
                self._failures.remove(due)
                raise OSError(due[2], f"{os.strerror(due[2])} (FaultFS.fail)", target)

    def _path(self, path: Any) -> str:
        return str(os.path.abspath(os.fspath(path)))

    def _fd_path(self, fd: int) -> str | None:
        entry = self._fds.get(fd)
        return entry[1] if entry else None

    def _load(self, d: _Dir, path: str) -> None:
        """Look into a directory for the first time: what it holds is durable."""
        if d.loaded:
            return
        for name in os.listdir(path):
            full = os.path.join(path, name)
            mode = os.lstat(full).st_mode
            if stat_mod.S_ISDIR(mode):
                d.current[name] = _Dir(loaded=False)
            elif stat_mod.S_ISREG(mode):
                d.current[name] = _File(_read_path(full))
        d.durable = dict(d.current)
        d.loaded = True

    def _dir(self, path: str) -> _Dir | None:
        """The model of directory ``path`` (absolute), or None when it is not under root."""
        if path == self.root:
            self._load(self._root, path)
            return self._root
        if not path.startswith(self.root + os.sep):
            return None
        d, here = self._root, self.root
        for part in os.path.relpath(path, self.root).split(os.sep):
            self._load(d, here)
            node = self._entry(d, here, part)
            if not isinstance(node, _Dir):
                return None
            d, here = node, os.path.join(here, part)
        self._load(d, here)
        return d

    def _entry(self, d: _Dir, dir_path: str, name: str) -> _Node | None:
        """The entry ``name`` of ``d``; one that appeared behind the model's back is adopted as durable."""
        node = d.current.get(name)
        if node is None:
            full = os.path.join(dir_path, name)
            with contextlib.suppress(FileNotFoundError):
                mode = os.lstat(full).st_mode
                if stat_mod.S_ISDIR(mode):
                    node = _Dir(loaded=False)
                elif stat_mod.S_ISREG(mode):
                    node = _File(_read_path(full))
                if node is not None:
                    d.current[name] = d.durable[name] = node
        return node

    def _where(self, path: str) -> tuple[_Dir, str, str] | None:
        """(model of the parent directory, its path, the name) for a path under root."""
        parent, name = os.path.split(path)
        d = self._dir(parent) if name else None
        return (d, parent, name) if d is not None else None

    # --------------------------------------------------- the calls: paths
    def _open(self, path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        full = self._path(path)
        self._enter("open", full)
        with self._mu:
            self._check_power()
            where = None if full == self.root else self._where(full)
            node = self._dir(full) if full == self.root else self._entry(*where) if where else None
            fd = os.open(path, flags, mode, **kw)
            if node is None and where is not None:  # created by this call
                node = where[0].current[where[2]] = _File()
                where[0].version += 1
            elif isinstance(node, _File) and flags & os.O_TRUNC:
                node.version += 1
            if node is None:  # not under root
                self._fds.pop(fd, None)
            else:
                self._fds[fd] = (node, full)
            return fd

    def _rename(self, src: Any, dst: Any, **kw: Any) -> None:
        s, t = self._path(src), self._path(dst)
        self._enter("rename", s)
        with self._mu:
            self._check_power()
            sw, tw = self._where(s), self._where(t)
            node = self._entry(*sw) if sw else None
            if tw:
                self._entry(*tw)  # a target that was there must come back
            if isinstance(node, _Dir):
                raise OSError(errno_codes.EXDEV, "FaultFS does not model renaming directories", s)
            os.rename(src, dst, **kw)
            if sw:
                sw[0].current.pop(sw[2], None)
                sw[0].version += 1
            if tw:
                tw[0].current[tw[2]] = node if node is not None else _File(_read_path(t))
                tw[0].version += 1

    def _link(self, src: Any, dst: Any, **kw: Any) -> None:
        s, t = self._path(src), self._path(dst)
        self._enter("link", s)
        with self._mu:
            self._check_power()
            sw, tw = self._where(s), self._where(t)
            node = self._entry(*sw) if sw else None
            os.link(src, dst, **kw)
            if tw:
                tw[0].current[tw[2]] = node if node is not None else _File(_read_path(t))
                tw[0].version += 1

    def _unlink(self, path: Any, **kw: Any) -> None:
        full = self._path(path)
        self._enter("unlink", full)
        with self._mu:
            self._check_power()
            where = self._where(full)
            if where:
                self._entry(*where)
            os.unlink(path, **kw)
            if where:
                where[0].current.pop(where[2], None)
                where[0].version += 1

    def _mkdir(self, path: Any, mode: int = 0o777, **kw: Any) -> None:
        full = self._path(path)
        self._enter("mkdir", full)
        with self._mu:
            self._check_power()
            where = self._where(full)
            os.mkdir(path, mode, **kw)
            if where:
                where[0].current[where[2]] = _Dir()
                where[0].version += 1

    def _listdir(self, path: Any = ".") -> list[str]:
        self._enter("listdir", self._path(path))
        return os.listdir(path)

    def _stat(self, path: Any, **kw: Any) -> os.stat_result:
        self._enter("stat", self._path(path))
        return os.stat(path, **kw)

    # ----------------------------------------------------- the calls: fds
    def _close(self, fd: int) -> None:
        self._enter("close", self._fd_path(fd))
        with self._mu:
            self._fds.pop(fd, None)
            os.close(fd)

    def _dup(self, fd: int) -> int:
        self._enter("dup", self._fd_path(fd))
        with self._mu:
            self._check_power()
            new = os.dup(fd)
            if fd in self._fds:
                self._fds[new] = self._fds[fd]
            else:
                self._fds.pop(new, None)
            return new

    def _pread(self, fd: int, n: int, offset: int) -> bytes:
        self._enter("pread", self._fd_path(fd))
        return os.pread(fd, n, offset)

    def _fstat(self, fd: int) -> os.stat_result:
        self._enter("fstat", self._fd_path(fd))
        return os.fstat(fd)

    def _changing(self, name: str, fd: int, call: Callable[[], Any]) -> Any:
        """Run a call that changes a file's contents."""
        self._enter(name, self._fd_path(fd))
        with self._mu:
            self._check_power()
            result = call()
            entry = self._fds.get(fd)
            if entry is not None and isinstance(entry[0], _File):
                entry[0].version += 1
            return result

    def _write(self, fd: int, data: Any) -> int:
        return int(self._changing("write", fd, lambda: os.write(fd, data)))

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        return int(self._changing("pwrite", fd, lambda: os.pwrite(fd, data, offset)))

    def _ftruncate(self, fd: int, length: int) -> None:
        self._changing("ftruncate", fd, lambda: os.ftruncate(fd, length))

    def _sync(self, name: str, fd: int, real: Callable[[int], None]) -> None:
        self._enter(name, self._fd_path(fd))
        with self._mu:
            self._check_power()
            entry = self._fds.get(fd)
            node = entry[0] if entry else None
            snap: Any = None
            if isinstance(node, _File):
                snap = (node.version, _read_fd(fd))
            elif isinstance(node, _Dir):
                assert entry is not None
                self._load(node, entry[1])
                snap = (node.version, dict(node.current))
        if self.real_sync:
            real(fd)  # outside the lock: other threads go on writing meanwhile
        with self._mu:
            self._check_power()
            if node is not None and snap[0] > node.synced_version:
                node.synced_version = snap[0]
                if isinstance(node, _File):
                    node.synced = snap[1]
                else:
                    node.durable = snap[1]

    def _fsync(self, fd: int) -> None:
        self._sync("fsync", fd, os.fsync)

    def _fdatasync(self, fd: int) -> None:
        self._sync("fdatasync", fd, os.fdatasync)
