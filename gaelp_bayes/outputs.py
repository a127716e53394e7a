"""Where commands write: an output never destroys what is not its own.

``check_output`` runs before any work starts (so a bad ``--out`` fails in a second, not after the fit):

- an output is never an input, inside an input folder, a folder holding an input, the working folder or
  one holding it, a special file (a device such as ``/dev/null``, a pipe, a socket), or inside a model cache
  (only ``fit`` writes a cache, whole) (not even with ``overwrite``);
- a file output is never an existing folder, and a folder output never an existing file;
- anything that exists is replaced only with ``overwrite``; an empty folder is free, and so is a folder
  that carries the command's own ``mark`` (the report's figure folder);
- the destination must be writable: the nearest existing folder above it takes a temporary file.

``atomic_file`` writes a file through a temporary file beside it, renamed into place on success and
removed on any failure.  Folders are written the same way by ``cache.write`` and the report.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UsageError

MODEL_MANIFEST = "manifest.json"  # the file that makes a folder a model cache (``cache.MANIFEST``)


def is_model_cache(path: Path) -> bool:
    return (path / MODEL_MANIFEST).is_file()


def _describe(path: Path) -> str:
    if path.is_dir():
        if is_model_cache(path):
            return "a model cache"
        n = sum(1 for _ in path.iterdir())
        return f"a folder with {n} entr{'y' if n == 1 else 'ies'}"
    return "a file"


def check_output(out: str | Path, *, inputs: Iterable[str | Path] = (), folder: bool = False,
                 overwrite: bool = False, option: str = "--out", mark: str | None = None) -> Path:
    """``out`` as a Path if a command may write it (see the module doc), else ``UsageError`` naming ``option``."""
    path = Path(out)
    target = path.resolve()
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise UsageError(f"{option} {path} is the working folder or holds it; choose another path")
    for given in inputs:
        source = Path(given).resolve()
        if target == source:
            raise UsageError(f"{option} {path} is the input {given}; choose another path")
        if source in target.parents:
            raise UsageError(f"{option} {path} is inside the input {given}; choose another path")
        if target in source.parents:
            raise UsageError(f"{option} {path} holds the input {given}; choose another path")
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise UsageError(f"{option} {path} is a special file (a device, a pipe or a socket), not a regular file "
                         "or folder; choose another path")
    for above in target.parents:
        if is_model_cache(above):
            raise UsageError(f"{option} {path} is inside the model cache {above}; only fit writes a cache (whole): "
                             "choose another path")
    if path.exists() or path.is_symlink():
        kind = "folder" if folder else "file"
        if folder != (path.is_dir() and not path.is_symlink()):
            raise UsageError(f"{option} {path} is {_describe(path)}, and this output is a {kind}; "
                             "choose another path")
        free = folder and (not any(path.iterdir()) or (mark is not None and (path / mark).is_file()))
        if not free and not overwrite:
            raise UsageError(f"{option} {path} already exists ({_describe(path)}); pass --overwrite to replace "
                             "it, or choose another path")
    anchor = path.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise UsageError(f"{option} {path}: {anchor} is a file, so nothing can be written under it")
    try:
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {anchor} ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
