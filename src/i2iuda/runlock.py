"""One run folder, one writer.

A command that writes a run folder (``i2iuda run``, ``translate train``, ``segment train``,
``translate apply --out``, ``segment eval --out``, ``segment predict --out``) first takes an exclusive ``flock`` on
``FOLDER/.i2iuda.lock`` and holds it for as long as it writes there (``holding``). The OS drops
the lock when the process dies, kill -9 included, so a stale lock cannot block anyone, and a
recycled pid cannot fake one. The file's text (pid, host, start time, command) only words the
refusal a second writer gets.

Not locked out: the stages one ``i2iuda run`` runs inside its own folder (the process already
holds an enclosing folder, or, for a stage in a lane process, its parent does: ``inherit``),
and the other ranks of a torchrun job (only rank 0 takes the lock).
A folder inside a folder that another live process holds is refused too.

Holding the lock also makes it safe to sweep the temporary files (``.NAME.XXXX.tmp``, see io.py)
that a killed writer left behind: nobody else can be writing them.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".i2iuda.lock"
_held: dict[Path, int] = {}  # folders this process holds -> their lock file descriptors


def _holder(lock: Path) -> str:
    try:
        h = json.loads(lock.read_text())
        return (f"process {h['pid']} on {h['host']} (since {h['started']}: {h['command'][:120]})")
    except (OSError, ValueError, KeyError):
        return "another process"


def _busy(lock: Path) -> bool:
    """Whether a live process holds ``lock`` (probed with a shared lock, released at once)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _held_here(folder: Path) -> bool:
    """Whether this process already holds ``folder`` or a folder around it."""
    return any(folder == p or p in folder.parents for p in _held)


def check_free(folder: str | Path) -> None:
    """Refuse, with one line naming the holder, if a live process holds ``folder`` or a folder
    around it (and this process does not)."""
    folder = Path(folder).resolve()
    if _held_here(folder):
        return
    clash = next((f for f in (folder, *folder.parents) if f.exists() and not f.is_dir()), None)
    if clash is not None:
        raise UserError(f"{folder}: {clash} is a file, not a folder; choose another output folder")
    for f in (*reversed(folder.parents), folder):
        if _busy(f / LOCK_NAME):
            where = "" if f == folder else f" (inside {f})"
            raise UserError(f"{folder}{where}: in use by {_holder(f / LOCK_NAME)}; wait for it to finish "
                            f"or choose another folder")


@contextlib.contextmanager
def holding(folder: str | Path):
    """Hold ``folder`` for the block: the whole of a command that writes it. Nested blocks on the
    same folder or folders inside it, and ranks other than 0, hold nothing more."""
    folder = Path(folder).resolve()
    if os.environ.get("RANK", "0") != "0" or _held_here(folder):
        yield
        return
    check_free(folder)  # (also: a file where the folder should be)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{folder}: in use by {_holder(lock)}; wait for it to finish or choose another "
                        f"folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}).encode())
    _held[folder] = fd
    try:
        sweep_temporaries(folder)
        yield
    finally:
        del _held[folder]
        os.close(fd)  # the lock goes with the descriptor; the file stays (its text is harmless)


def inherit(folder: str | Path) -> None:
    """In a lane of a study (lanes.py): the study's process holds ``folder``, for its lanes too
    (they die with it)."""
    _held[Path(folder).resolve()] = -1


def sweep_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed writer left in ``folder`` (call only while holding it)."""
    n = 0
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            n += 1
    return n
