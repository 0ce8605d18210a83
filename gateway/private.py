"""Folders and files only the gateway's user may read.

The data folder holds the embedded Redis AOF, which carries every camera URL with its password,
and the generated admin token: folders are 0700 and files 0600, also when an older version (or
someone's umask) left them readable by others.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077  # for the processes that write into the data folder (the embedded redis-server)


def private_dir(path: Path) -> Path:
    """Make `path` a folder only its owner can enter: missing folders (parents too) are created 0700,
    an existing one open to group or others is tightened to 0700."""
    path = Path(path)
    for p in [*reversed(path.parents), path]:
        if not p.exists():
            try:
                p.mkdir(mode=DIR_MODE)
            except FileExistsError:
                pass  # made meanwhile by someone else; tightened below if it is the data folder itself
    tighten(path)
    return path


def tighten(path: Path, *, follow: bool = True) -> None:
    """Take group and other permissions off `path` (a folder: 0700; a file: 0600).

    A link is followed only with `follow` (a data folder given as a link to a folder)."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if not stat.S_IMODE(st.st_mode) & 0o077:
        return
    want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    try:
        os.chmod(path, want)
    except OSError as e:
        # Someone else's folder: what the gateway writes into it is still 0600, but say so.
        log.warning("cannot restrict %s to mode %o (%s): other users may read it", path, want, e.strerror or e)


def tighten_tree(path: Path) -> None:
    """tighten() `path` and everything below it (links below it are neither followed nor changed)."""
    tighten(path)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            tighten(Path(root) / name, follow=False)


def private_file(path: Path, text: str) -> None:
    """Create `path` 0600 with `text` in it (never over an existing file: FileExistsError)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
