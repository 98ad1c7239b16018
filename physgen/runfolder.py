"""Run folders: one run's outputs per folder, never mixed with another run's, never two runs at once.

A command that writes into ``--out DIR`` calls :func:`prepare` first, naming the files it
writes (glob patterns relative to ``DIR``).  Then:

* ``--out`` must be a directory or creatable as one: ``--out FILE/sub`` or ``--out FILE``
  is one clear line naming the file in the way;
* if ``DIR`` already holds files this run would write (another run's outputs), the command
  refuses (:class:`~physgen.errors.UserError`, exit status 2, naming the files) unless it
  was given ``--overwrite``; then it first deletes *its own* previous outputs (the files
  matching its patterns, nothing else), so ``sample --n 8`` then ``sample --n 4
  --overwrite`` leaves 4 PNGs;
* continuing a run (``train --resume DIR``, ``sample --skip-existing``) is not another run:
  ``resume=True`` skips both;
* a lock ``DIR/.physgen.lock`` (an ``flock`` held for the life of the run, naming its pid,
  host and command) makes a second run into ``DIR`` fail at once with a line naming the
  lock; a lock left by a dead process is not held, so the next run takes it over.  Under
  ``torchrun`` rank 0 prepares and holds the folder; other ranks :func:`join` it (they wait
  until rank 0 of *their* job holds it, so they never write before it was checked);
* temporary files of killed writers (:func:`physgen.io.stale_temporaries`) are removed.

:func:`prepare_file` does the same for a command whose output is one file (``sample --out
grid.png``, ``eval ref-stats --out stats.npz``).  Locks are released by :func:`release_all`
(``physgen.cli.main`` calls it when a command returns) or when the process exits.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

from .errors import UserError
from .io import output_mode, stale_temporaries

try:  # POSIX advisory locks; elsewhere a lock file with a pid (see _Lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunFolder", "prepare", "prepare_file", "join", "check_out_dir", "release_all", "job_token", "add_overwrite_argument"]

LOCK_NAME = ".physgen.lock"
_HELD: list["RunFolder"] = []


def job_token() -> str:
    """What identifies this ``torchrun`` job to its ranks ("" outside torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return ""
    keys = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")
    return ":".join(os.environ.get(k, "") for k in keys)


def add_overwrite_argument(parser, what: str = "--out") -> None:
    """``--overwrite``: the flag every command that writes a run folder takes."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace a previous run's outputs in {what} (this command's own files, deleted first)")


# --------------------------------------------------------------------------- paths


def _named(out, flag: str) -> Path:
    """``out`` as a path; an empty (or blank) one is refused: ``Path("")`` is the current folder,
    where a run's files would land among the user's."""
    if not str(out).strip():
        raise UserError(f"{flag} {str(out)!r} is empty; name the output (use . for the current folder)")
    return Path(out)


def check_out_dir(out, flag: str = "--out") -> Path:
    """``out`` as a directory path, created: UserError naming the file in the way when
    ``out`` or one of its parents is a file, or when it cannot be created (or is empty)."""
    out = _named(out, flag)
    for p in (out, *out.parents):
        if p.exists():
            if p.is_dir():
                break
            if p == out:
                raise UserError(f"{flag} {str(out)!r} is a file, not a directory")
            raise UserError(f"{flag} {str(out)!r}: {str(p)!r} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {str(out)!r}: cannot create the directory ({exc.strerror or exc})") from None
    return out


def _new_dirs(out: Path) -> list[Path]:
    """The folders (``out`` and parents) that do not exist yet, deepest first."""
    return [p for p in (out, *out.parents) if not p.exists()]


def _matches(out: Path, patterns: Iterable[str]) -> list[Path]:
    found: set = set()
    for pattern in patterns:
        found.update(p for p in out.glob(pattern) if p.is_file() and p.name != LOCK_NAME)
    return sorted(found)


def _listing(paths: Sequence[Path], out: Path, most: int = 4) -> str:
    names = [str(p.relative_to(out)) for p in paths[:most]]
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return ", ".join(names) + more


# --------------------------------------------------------------------------- locks


class _Lock:
    """An exclusive lock on ``path``: ``flock`` where the OS has it (released by the kernel
    when the holder dies, so a stale lock is simply free), else ``O_EXCL`` with a pid."""

    def __init__(self, path: Path, info: dict):
        self.path, self.info, self.fd = path, info, None

    def acquire(self) -> None:
        for _ in range(8):  # the holder may unlink the file between our open and our lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), output_mode())
            except FileExistsError:  # no flock: the file itself is the lock
                raise _Busy(_read_lock(self.path)) from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise _Busy(_read_lock(self.path)) from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(self.info) + "\n").encode())
            os.fsync(fd)
            self.fd = fd
            return
        raise _Busy(_read_lock(self.path))

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


class _Busy(Exception):
    def __init__(self, holder: dict):
        super().__init__(holder)
        self.holder = holder


def _read_lock(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """A prepared output folder (or file), holding its lock until :meth:`release`."""

    def __init__(self, path: Path, command: str, lock: Optional[_Lock], cleared: Sequence[Path] = (), created: Sequence[Path] = ()):
        self.path, self.command, self._lock, self.cleared = path, command, lock, list(cleared)
        self._created = list(created)

    def release(self) -> None:
        """Release the lock; folders this run created and left empty (it failed before
        writing anything) are removed again."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        for d in self._created:
            try:
                d.rmdir()
            except OSError:  # not empty (the run wrote there) or gone
                break
        self._created = []
        if self in _HELD:
            _HELD.remove(self)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def release_all() -> None:
    """Release every lock this process holds (end of a command)."""
    for folder in list(_HELD):
        folder.release()


def _release_finished(path: Path) -> None:
    """A process runs one command at a time: a folder it still holds belongs to a finished
    command whose caller did not :func:`release_all` (e.g. ``args.func(args)`` called directly)."""
    for folder in list(_HELD):
        if folder.path.resolve() == path.resolve():
            folder.release()


def _take(lock_path: Path, command: str, flag: str, where: Path) -> _Lock:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time(), "job": job_token()}
    lock = _Lock(lock_path, info)
    try:
        lock.acquire()
    except _Busy as busy:
        holder = busy.holder
        stale = fcntl is None and holder.get("host") == info["host"] and not _pid_alive(holder.get("pid"))
        if stale:  # no flock here: a lock file whose process is gone is taken over
            lock_path.unlink(missing_ok=True)
            return _take(lock_path, command, flag, where)
        who = f"physgen {holder.get('command', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
        raise UserError(f"{flag} {str(where)!r} is in use by {who}; wait for it or choose another {flag} (lock {str(lock_path)!r})") from None
    except OSError as exc:
        raise UserError(f"{flag} {str(where)!r}: cannot create the lock {str(lock_path)!r} ({exc.strerror or exc})") from None
    return lock


# --------------------------------------------------------------------------- preparing


def prepare(
    out,
    command: str,
    outputs: Sequence[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    conflicts: Union[None, Sequence[str], Callable[[Path], bool]] = None,
    keep: Optional[Callable[[Path], bool]] = None,
    sweep: bool = True,
    flag: str = "--out",
    hint: str = "",
    resume_flag: str = "--resume",
) -> RunFolder:
    """Check, lock and (with ``overwrite``) clear the output folder ``out`` of ``command``.

    ``outputs``: glob patterns (relative to ``out``) of every file the command writes.
    ``conflicts``: which existing files make ``out`` "another run's" (patterns, or a
    predicate on paths; default ``outputs``).  ``keep``: files that ``overwrite`` must not
    delete (those this run rewrites anyway, e.g. other ranks' shards).  ``resume``: this run
    continues the folder's run (no refusal, nothing cleared; with ``overwrite`` too, refused:
    the two say opposite things, ``resume_flag`` names the first).  ``hint`` ends the refusal.
    """
    if resume and overwrite:
        raise UserError(f"{resume_flag} and --overwrite disagree: the first continues the run in {str(out)!r}, the second would delete "
                        f"its files first; give one of them")
    created = _new_dirs(_named(out, flag))
    out = check_out_dir(out, flag)
    _release_finished(out)
    lock = _take(out / LOCK_NAME, command, flag, out)
    try:
        if sweep:
            for tmp in stale_temporaries(out):
                tmp.unlink(missing_ok=True)
        cleared: list[Path] = []
        if not resume:
            mine = _matches(out, outputs)
            if conflicts is None:
                clash = mine
            elif callable(conflicts):
                clash = [p for p in mine if conflicts(p)]
            else:
                clash = _matches(out, conflicts)
            if clash and not overwrite:
                raise UserError(f"{flag} {str(out)!r} already holds another run's outputs ({_listing(clash, out)}); "
                                f"pass --overwrite to replace them{hint}, or choose another {flag}")
            if overwrite:
                for path in mine:
                    if keep is None or not keep(path):
                        path.unlink(missing_ok=True)
                        cleared.append(path)
    except BaseException:
        RunFolder(out, command, lock, created=created).release()
        raise
    folder = RunFolder(out, command, lock, cleared, created)
    _HELD.append(folder)
    return folder


def prepare_file(path, command: str, *, overwrite: bool = False, flag: str = "--out") -> RunFolder:
    """:func:`prepare` for a command whose output is the one file ``path``: its folder is
    checked, the file locked (``.NAME.lock`` beside it), and an existing file refused unless
    ``overwrite`` (the writer then replaces it atomically)."""
    path = _named(path, flag)
    if path.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a directory; name a file")
    created = _new_dirs(path.parent)
    parent = check_out_dir(path.parent, flag) if str(path.parent) not in ("", ".") else Path(".")
    _release_finished(path)
    lock = _take(parent / f".{path.name}.lock", command, flag, path)
    if path.exists() and not overwrite:
        lock.release()
        raise UserError(f"{flag} {str(path)!r} already exists (another run's output); pass --overwrite to replace it, or choose another {flag}")
    folder = RunFolder(path, command, lock, created=created)
    _HELD.append(folder)
    return folder


def join(out, command: str, *, timeout: float = 300.0, poll: float = 0.2, flag: str = "--out") -> Path:
    """For ranks other than 0 of a ``torchrun`` job: wait until rank 0 of this job holds the
    folder (its lock names :func:`job_token`), so nothing is written before it was checked."""
    out = Path(out)
    token, deadline = job_token(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = _read_lock(out / LOCK_NAME)
        if holder.get("job") == token and holder.get("command") == command:
            return out
        time.sleep(poll)
    raise UserError(f"{flag} {str(out)!r}: rank 0 of this job did not take the folder within {timeout:g} s (see its error)")
