"""Writing outputs all at once, and the one rule for an output that already exists.

Every command that writes a file or a directory refuses to replace one that exists unless asked
(``overwrite=True``, on the CLI ``--overwrite``), with one message, :func:`refuse_existing`; a directory
of outputs is written by :func:`atomic_directory`, which applies that rule and renames the finished
directory into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_directory", "refuse_existing"]


def refuse_existing(*paths, overwrite: bool, what: str = "") -> None:
    """Raise :class:`FileExistsError` for the first of ``paths`` that exists, unless ``overwrite``.

    Called before any long work starts (so a run does not fail at its end) and again by the writer.
    ``what`` says what the existing path is when its name does not (e.g. "a twin state").

    >>> refuse_existing(Path("."), overwrite=False)
    Traceback (most recent call last):
    FileExistsError: . exists; pass overwrite=True (CLI: --overwrite) to replace it.
    """
    if overwrite:
        return
    for path in paths:
        if path is not None and Path(path).exists():
            kind = f" ({what})" if what else ""
            raise FileExistsError(f"{path} exists{kind}; pass overwrite=True (CLI: --overwrite) to replace it.")


@contextlib.contextmanager
def atomic_directory(out, *, overwrite: bool):
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` in one rename.

    An existing ``out`` is refused unless ``overwrite`` (:func:`refuse_existing`). On any error (or
    Ctrl-C) the temporary directory is removed and ``out`` is left as it was, so a reader never sees a
    partial output.
    """
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename
