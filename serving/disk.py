"""A full disk, said plainly: find "no space left" in an error, and name the filesystem.

A write that runs out of space fails deep inside whatever wrote (Python's `OSError` with
ENOSPC, TensorFlow's `ResourceExhaustedError` "...; No space left on device", an
exception wrapped by TFX's runner). `find_full_disk` looks through an error and what it
was raised from; `DiskFull` is the error the toolkit raises instead: it names the path,
the filesystem it is on (mount point and type) and the space left there, so the operator
knows which disk to free.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NamedTuple, Optional

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# ...and SQLite's SQLITE_FULL, as ML Metadata reports it.
SQLITE_FULL = "database or disk is full"
NO_SPACE_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), SQLITE_FULL)


class DiskFull(RuntimeError):
    """A write failed for want of space; the message names the path and the filesystem."""

    def __init__(self, path: os.PathLike | str, doing: str = "", after: str = ""):
        self.path = Path(path)
        self.filesystem = filesystem_of(self.path)
        super().__init__(
            f"disk full{' ' + doing if doing else ''}: no space left on "
            f"{self.filesystem.describe()} writing {self.path}"
            f"{'; ' + after if after else ''}; free space on {self.filesystem.mount_point} "
            f"and run again")


class Filesystem(NamedTuple):
    mount_point: Path
    type: str
    free_bytes: int
    total_bytes: int

    def describe(self) -> str:
        return (f"{self.mount_point} ({self.type}, {format_bytes(self.free_bytes)} free of "
                f"{format_bytes(self.total_bytes)})")


def filesystem_of(path: os.PathLike | str) -> Filesystem:
    """The filesystem holding `path` (or its nearest existing parent)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    mount = path
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        stat = os.statvfs(path)
        free, total = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
    except OSError:
        free = total = 0
    return Filesystem(mount, _mount_type(mount), free, total)


def find_full_disk(error: BaseException) -> Optional[str]:
    """The path a write ran out of space on, when `error` (or an error it was raised from)
    is a full disk; "" when it is one but names no path; None when it is not one."""
    found = _find(error)
    return None if found is None else found[0]


def _find(error: BaseException):
    """(path or "", whether SQLite said it) of the full disk in `error`'s chain, or None.
    The first error in the chain that names a path wins: a write that failed for want of
    space is often followed by a failed attempt to record that failure."""
    seen, found = set(), []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFull):
            found.append((str(error.path), False))
        elif isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            found.append((str(error.filename or ""), False))
        else:
            text = str(error)
            for marker in NO_SPACE_TEXTS:
                if marker in text:
                    # TensorFlow's file system errors read "<path>; No space left on device"
                    head = text.split(marker)[0].rstrip("; :").split()
                    path = head[-1] if head and os.path.isabs(head[-1]) else ""
                    found.append((path, marker == SQLITE_FULL))
                    break
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return next((f for f in found if f[0]), found[0] if found else None)


def as_disk_full(error: BaseException, fallback: os.PathLike | str, doing: str = "",
                 after: str = "", database: Optional[os.PathLike | str] = None
                 ) -> Optional[DiskFull]:
    """`error` as a DiskFull naming its path (else `database` when SQLite said it, else
    `fallback`), or None when it is not a full disk."""
    if isinstance(error, DiskFull):
        return error
    found = _find(error)
    if found is None:
        return None
    path, from_sqlite = found
    return DiskFull(path or (database if from_sqlite and database else fallback), doing, after)


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _mount_type(mount: Path) -> str:
    try:
        with open("/proc/self/mounts") as f:
            types = {fields[1]: fields[2] for fields in (line.split() for line in f)
                     if len(fields) > 2}
    except OSError:
        return "filesystem"
    return types.get(str(mount).replace(" ", "\\040"), "filesystem")
