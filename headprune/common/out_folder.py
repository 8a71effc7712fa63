"""Output folders that lose nothing: refuse to overwrite a user's folder unless asked, and write a new
one completely before it replaces anything.

:func:`check_out_folder` runs before any work (``--out`` a file, or a non-empty folder without
``overwrite``, a symbolic link, or a folder that is or lies inside one of the run's inputs, fails at once);
:func:`staged_folder` yields a temporary sibling folder to write into and,
only when the block finishes without an error, renames it into place (the old folder, if replaced, is
removed after the rename), so a crash leaves the old folder untouched and no stale file of an earlier
run survives beside the new ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutFolderError", "check_out_folder", "staged_folder"]


class OutFolderError(ValueError):
    """An output path is a file, or a non-empty folder that may not be overwritten."""


def check_out_folder(path: str | os.PathLike[str], *, overwrite: bool = False, what: str = "--out",
                     inputs: Mapping[str, str | os.PathLike[str] | None] | None = None) -> Path:
    """``path`` as a :class:`Path` if a folder may be written there; :class:`OutFolderError` otherwise.

    Refused: a file; a symbolic link (dangling or not: the staged folder would replace the link, not write
    where it points); a non-empty folder without ``overwrite``; a folder equal to, inside or containing an
    input folder (replacing it would delete the input).

    :param path: the output folder.
    :param overwrite: allow replacing a non-empty folder.
    :param what: the argument's name in the message.
    :param inputs: ``{argument name: path}`` of the run's inputs (``None`` paths are skipped).
    """
    out = Path(path)
    if out.is_symlink():
        raise OutFolderError(f"{what} {out} is a symbolic link (to {os.readlink(out)}): give a real folder path")
    resolved = out.resolve()
    for name, given in (inputs or {}).items():
        if given is None or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if resolved == source or source in resolved.parents or resolved in source.parents:
            raise OutFolderError(f"{what} {out} is, is inside, or contains {name} {given}: writing there would "
                                 "replace the input; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"{what} {out} is a file, not a folder: choose a folder path")
    if out.is_dir() and not overwrite:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise OutFolderError(f"{what} {out} is not empty ({shown}): pass --overwrite (overwrite=True) to "
                                 "replace it, or choose a new folder")
    return out


@contextmanager
def staged_folder(path: str | os.PathLike[str], *, overwrite: bool = False, what: str = "--out",
                  inputs: Mapping[str, str | os.PathLike[str] | None] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success rename it to ``path``.

    :param path: the final folder (checked with :func:`check_out_folder` before and again at the end).
    :param overwrite: replace a non-empty ``path`` (it is renamed aside first, then removed).
    :param what: the argument's name in messages.
    :param inputs: the run's input paths (:func:`check_out_folder`).
    """
    out = check_out_folder(path, overwrite=overwrite, what=what, inputs=inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
        # something else may have written there meanwhile
        check_out_folder(out, overwrite=overwrite, what=what, inputs=inputs)
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
