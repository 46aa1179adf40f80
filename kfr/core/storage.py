"""Atomic file writes and build-once caches.

Two rules hold everywhere in kfr: a reader never sees a half-written file (write to a temporary
name in the same directory, then ``os.replace``), and concurrent jobs of a sweep that need the
same cached artefact build it once (an inter-process file lock around check-build-publish).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

READY_MARKER = ".complete"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _temporary_sibling(path: Path, *, directory: bool = False):
    """Yield a temporary path next to ``path``; it is removed if the block raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_current_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp creates 0600 files; give them the usual permissions so caches and outputs
        # can be shared between the users of a cluster.
        tmp.chmod(0o666 & ~_current_umask())
    try:
        yield tmp
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path``."""
    path = Path(path)
    with _temporary_sibling(path) as tmp:
        write(tmp)
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    atomic_write(path, write)


def build_directory_once(target: str | Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, a directory built by ``build(tmp_dir)`` exactly once across processes.

    ``build`` fills a fresh temporary directory; it is renamed to ``target`` only when ``build``
    returns, with a marker file inside, so a crash never leaves a directory that looks complete.
    A second process waiting on the lock finds the finished directory and returns at once.
    """
    target = Path(target)
    if (target / READY_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / READY_MARKER).exists():
            return target
        if target.exists():  # left by a crashed builder from before the marker existed
            shutil.rmtree(target)
        with _temporary_sibling(target, directory=True) as tmp:
            build(tmp)
            (tmp / READY_MARKER).write_text("", encoding="utf-8")
            os.replace(tmp, target)
    return target
