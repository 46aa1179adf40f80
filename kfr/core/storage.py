"""Atomic file writes and build-once caches.

Two rules hold everywhere in kfr: a reader never sees a half-written file (write to a temporary
name in the same directory, then ``os.replace``), and concurrent jobs of a sweep that need the
same cached artefact build it once (an inter-process file lock around check-build-publish).

A cache directory is complete when it holds :data:`READY_MARKER`, written inside the temporary
directory before the rename that publishes it. The marker is a manifest: the size and SHA-256 of
every file the build wrote. Reusing a directory checks every file's size each time, and its
content hash once per process (again if a file's size, mtime or inode changes under the
process); a directory that does not match (truncated, altered, a file missing) is never loaded:
it is rebuilt with a warning. A marker from before manifests existed (an empty file) is trusted,
as it always was, and given a manifest under the lock: from then on the directory is verified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from kfr.core import faults
from kfr.core.errors import UserError

log = logging.getLogger(__name__)

READY_MARKER = ".complete"
MANIFEST_VERSION = 1
HASH = "sha256"
_CHUNK = 1 << 22
# Directories whose content hash this process has checked, with the stat of their files then.
_verified: dict[str, tuple] = {}


# Errors of the machine, not of kfr: the disk is full or the folder may not be written.
_RESOURCE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_error(err: BaseException, where: str | Path | None = None) -> UserError | None:
    """``err`` as one line naming the path when it (or what caused it) is a full disk, a
    read-only folder or a missing permission; None for every other error."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _RESOURCE_ERRORS:
            path = current.filename or where
            if current.errno in (errno.ENOSPC, errno.EDQUOT) and current.filename2:
                path = current.filename2  # a copy or move: the destination is what filled up
            what = _RESOURCE_ERRORS[current.errno]
            return UserError(
                f"cannot write: {what} ({type(err).__name__}); free space or choose a writable "
                "folder (paths.output_root, paths.cache_dir), then run the same command again",
                path=path,
            )
        current = current.__cause__ or current.__context__
    return None


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
    with _named_errors(path), _temporary_sibling(path) as tmp:
        write(tmp)
        faults.point("atomic_write.replace", path.name)
        os.replace(tmp, path)


@contextmanager
def _named_errors(path: Path):
    """An OSError that names no file (a failed ``write``: disk full) names ``path``."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


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


def file_digest(path: Path) -> str:
    digest = hashlib.new(HASH)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every file a build wrote under ``directory``, as sorted relative POSIX paths: not the
    marker, and not what other builds keep there later (a nested cache entry such as an index
    inside its embeddings' directory, its lock, an interrupted build's temporary)."""
    found = []
    for current, dirs, names in os.walk(directory):
        here = Path(current)
        dirs[:] = sorted(
            d
            for d in dirs
            if not (d.startswith(".") and d.endswith(".tmp"))
            and not (here / d / READY_MARKER).exists()
        )
        for name in names:
            path = here / name
            if path.is_file() and not name.endswith(".lock"):
                found.append(path.relative_to(directory).as_posix())
    return sorted(f for f in found if f != READY_MARKER)


def directory_manifest(directory: str | Path) -> dict[str, Any]:
    """The marker's content for ``directory``: every file's size and content hash."""
    directory = Path(directory)
    files = {
        rel: {"size": (directory / rel).stat().st_size, HASH: file_digest(directory / rel)}
        for rel in _files(directory)
    }
    return {"version": MANIFEST_VERSION, "hash": HASH, "files": files}


def _read_manifest(target: Path) -> dict[str, Any] | None:
    """The manifest in ``target``'s marker; None for a legacy (empty) marker. Raises OSError
    when there is no marker and ValueError when it is unreadable."""
    text = (target / READY_MARKER).read_text(encoding="utf-8")
    if not text.strip():
        return None
    manifest = json.loads(text)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError("not a manifest")
    return manifest


def _stat_signature(target: Path, files: Iterable[str]) -> tuple:
    signature = []
    for rel in files:
        st = (target / rel).stat()
        signature.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(signature)


def verify_directory(target: str | Path, *, full: bool = False) -> str | None:
    """Why the complete-looking directory ``target`` must not be used, or None when it may.

    Sizes are checked every time, content hashes once per process (``full``: every time).
    "missing" when ``target`` has no marker at all; a legacy (empty) marker passes.
    """
    problem = _inspect(Path(target), full=full)
    return None if problem == _LEGACY else problem


_LEGACY = "legacy marker"


def _inspect(target: Path, *, full: bool = False) -> str | None:
    try:
        manifest = _read_manifest(target)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"unreadable marker {READY_MARKER} ({err})"
    if manifest is None:
        return _LEGACY
    files: dict[str, dict[str, Any]] = manifest["files"]
    algorithm = str(manifest.get("hash", HASH))
    try:
        signature = _stat_signature(target, files)
    except OSError:
        missing = next(rel for rel in files if not (target / rel).is_file())
        return f"{missing} is missing"
    for (rel, size, _mtime, _ino), entry in zip(signature, files.values(), strict=True):
        if size != entry.get("size"):
            return f"{rel} has {size} bytes, {entry.get('size')} when built"
    key = str(target.resolve())
    if not full and _verified.get(key) == signature:
        return None
    if algorithm not in hashlib.algorithms_available:
        return f"unknown hash {algorithm}"
    for rel, entry in files.items():
        digest = hashlib.new(algorithm)
        with (target / rel).open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != entry.get(algorithm):
            return f"{rel} does not match its {algorithm} from when it was built"
    _verified[key] = signature
    return None


def _write_marker(directory: Path) -> None:
    manifest = directory_manifest(directory)
    _verified.pop(str(directory.resolve()), None)
    atomic_write_text(directory / READY_MARKER, json.dumps(manifest, indent=1) + "\n")


def _adopt(target: Path) -> None:
    """Give a directory with a legacy (empty) marker its manifest: it was published complete,
    as every build is, so it is trusted as it always was, and verified from now on. A cache
    this process may not write to stays as it is."""
    try:
        with FileLock(str(target) + ".lock"):
            if _inspect(target) == _LEGACY:
                _write_marker(target)
    except OSError as err:
        log.debug("Could not add a manifest to %s: %s", target, err)


def _discard(target: Path) -> None:
    """Remove ``target`` (under its lock): renamed aside first, so it vanishes at once."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.replace(target, aside / "damaged")
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_temporaries(target: Path) -> None:
    """Temporary directories of ``target`` left by builders that were killed (only the holder
    of the lock builds, so under the lock every one of them is stale)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir():
            log.info("Removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def build_directory_once(target: str | Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, a directory built by ``build(tmp_dir)`` exactly once across processes.

    ``build`` fills a fresh temporary directory; it is renamed to ``target`` only when ``build``
    returns, with the marker (its manifest) inside, so a crash never leaves a directory that
    looks complete. A second process waiting on the lock finds the finished directory and
    returns at once. A complete-looking directory that fails :func:`verify_directory` is
    rebuilt, with a warning.
    """
    target = Path(target)
    problem = _inspect(target)
    if problem is None:
        return target
    if problem == _LEGACY:
        _adopt(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        problem = _inspect(target)
        if problem in (None, _LEGACY):
            return target
        if problem != "missing":
            log.warning("Cache entry %s is damaged (%s): rebuilding it", target, problem)
        if target.exists():  # damaged, or left by a crashed builder from before the marker
            _discard(target)
        _remove_stale_temporaries(target)
        with _named_errors(target), _temporary_sibling(target, directory=True) as tmp:
            faults.point("build.start", target.name)
            build(tmp)
            manifest = directory_manifest(tmp)
            (tmp / READY_MARKER).write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
            faults.point("build.publish", target.name)
            os.replace(tmp, target)
        _verified[str(target.resolve())] = _stat_signature(target, manifest["files"])
    return target
