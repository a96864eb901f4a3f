"""Permissions of the data directory, and its secret key (imported by settings: no Django here)."""

import hashlib
import os
import secrets
import stat
import uuid
from pathlib import Path

# Files that hold secrets or user data: the databases (with their journals), the broker
# and results stores, the cache, the secret key and the search index.
PRIVATE_GLOBS = ("*.sqlite3*", "secret_key", "cache/**/*", "index/**/*", "celery-*")


def data_dir_secure(folder: Path) -> None:
    """DATA_DIR 0700 and its private files 0600 (folders 0700), if this account owns them."""
    try:
        if folder.stat().st_uid != os.getuid():
            return
        folder.chmod(0o700)
        for pattern in PRIVATE_GLOBS:
            for path in folder.glob(pattern):
                mode = path.lstat().st_mode
                if stat.S_ISLNK(mode):
                    continue
                wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
                if stat.S_IMODE(mode) & 0o077:
                    path.chmod(wanted)
    except OSError:
        pass  # a read-only or foreign directory: the site still starts


def secret_key_file(path: Path) -> str:
    """The key kept at ``path``, made on first use. Processes that start together on a fresh
    DATA_DIR (gunicorn workers, a worker pool) must agree on one key: it is written to a
    file of its own and hard-linked into place, so the name appears only with its whole
    content, and a process that loses the race reads the winner's key."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process was first: use its key
            except OSError:  # no hard links on this filesystem
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path.read_text().strip()


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` whole or not at all: a reader sees the old file or the new
    one, never a part (a temporary name of its own, flushed to disk, then renamed)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
