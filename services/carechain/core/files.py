"""Private files and directories: every database and key file is 0600 inside 0700 directories.

The modes are set explicitly (``chmod`` after creation), so they hold whatever
the process umask is (even ``umask 000``).
"""

from __future__ import annotations

import os
import pathlib

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: pathlib.Path) -> pathlib.Path:
    """Create path (and any missing parents) as 0700 directories; an existing path is made 0700 too.

    Parents that already exist are left alone (they may be shared, like /tmp).
    """
    path = pathlib.Path(path)
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            pass  # created concurrently: its mode is fixed below
        os.chmod(directory, PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: pathlib.Path) -> pathlib.Path:
    """Make sure path exists as a 0600 file in a 0700 directory, keeping any content."""
    path = pathlib.Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    os.chmod(path, PRIVATE_FILE_MODE)
    return path


def restrict_existing(*paths: pathlib.Path) -> None:
    """chmod 0600 the paths that exist (e.g. SQLite's -wal and -shm companions)."""
    for path in paths:
        if path.exists():
            os.chmod(path, PRIVATE_FILE_MODE)
