"""Permissions of the data directory (imported by settings: no Django here)."""

import os
import stat
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
