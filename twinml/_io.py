"""Writing a directory of outputs all at once."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_directory"]


@contextlib.contextmanager
def atomic_directory(out):
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` in one rename.

    On any error (or Ctrl-C) the temporary directory is removed and ``out`` is left as it was,
    so a reader never sees a partial output. Whether an existing ``out`` may be replaced is the
    caller's check.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename
