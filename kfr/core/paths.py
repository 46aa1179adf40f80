"""Where kfr's Hydra config tree is, for every command and test.

In a checkout the tree is ``conf/`` at the repository top level, beside the package (the layout
users edit); a built wheel ships the same files inside the package as ``kfr/conf``
(pyproject's package-dir mapping). Checkout first, so an editable install reads the files being
edited.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # kfr/


def config_dir() -> Path:
    """The directory holding ``config.yaml`` and the config groups."""
    for candidate in (_PACKAGE.parent / "conf", _PACKAGE / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"kfr's config tree is missing: neither {_PACKAGE.parent / 'conf'} nor "
        f"{_PACKAGE / 'conf'} holds config.yaml; reinstall kfr"
    )


CONFIG_DIR = str(config_dir())
