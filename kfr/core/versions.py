"""The library versions kfr supports, checked when a command starts.

The ranges are the ``[project] dependencies`` of ``pyproject.toml``, read back from the installed
kfr distribution's metadata (``importlib.metadata.requires("kfr")``), so pyproject stays the one
place they are written. CI installs every lower bound of the libraries whose APIs kfr leans on
(``make test-lowest``, ``ci/lowest.txt``). A library outside its range is refused before any work,
as one line naming it, its installed version and the range (a :class:`UserError`: exit code 2):
an older transformers, say, would otherwise run and silently ignore a keyword it does not know.

Only installed versions are read (``importlib.metadata.version``; nothing is imported), so the
check costs milliseconds. A requirement that is not installed at all is left to the import that
needs it (e.g. a GPU image carrying ``faiss-gpu`` in place of ``faiss-cpu``). Set
``KFR_ALLOW_UNSUPPORTED_VERSIONS=1`` to run anyway, e.g. to try a release kfr was not tested on.
"""

from __future__ import annotations

import importlib.metadata
import os

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from kfr.core.errors import UserError

DISTRIBUTION = "kfr"
ALLOW_ENV = "KFR_ALLOW_UNSUPPORTED_VERSIONS"


def installed_version(name: str) -> str | None:
    """A distribution's installed version, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def runtime_requirements(distribution: str = DISTRIBUTION) -> list[Requirement]:
    """The distribution's unconditional requirements (no extras); [] when it is not installed
    (e.g. the source tree run without ``pip install``)."""
    try:
        declared = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    requirements = []
    for line in declared:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            requirements.append(req)
    return requirements


def version_range(req: Requirement) -> str:
    """The requirement as written for a person: ``torch>=2.11,<2.14`` (lower bound first)."""
    parts = sorted(req.specifier, key=lambda s: (not s.operator.startswith((">", "=")), str(s)))
    return req.name + ",".join(str(s) for s in parts)


def unsupported(distribution: str = DISTRIBUTION) -> list[tuple[Requirement, str]]:
    """Each installed requirement whose version is outside its declared range, with that
    version. Pre-releases and local builds count by their release (``2.13.0+cpu`` is 2.13.0)."""
    found = []
    for req in runtime_requirements(distribution):
        if not req.specifier or (version := installed_version(req.name)) is None:
            continue
        try:
            Version(version)
        except InvalidVersion:  # not a version packaging can order: nothing to say about it
            continue
        if not req.specifier.contains(version, prereleases=True):
            found.append((req, version))
    return found


def check_supported_versions(distribution: str = DISTRIBUTION) -> None:
    """Raise a one-line :class:`UserError` if an installed library is outside kfr's range."""
    if os.environ.get(ALLOW_ENV, "").strip() not in ("", "0"):
        return
    found = unsupported(distribution)
    if not found:
        return
    named = "; ".join(
        f"{req.name} {v} is installed, {distribution} needs {version_range(req)}"
        for req, v in found
    )
    wanted = " ".join(f"'{version_range(req)}'" for req, _ in found)
    raise UserError(f"{named}: pip install {wanted} (or {ALLOW_ENV}=1 to run anyway)")
