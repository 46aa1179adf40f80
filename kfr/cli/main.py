"""The ``kfr`` command: Hydra entry point that runs one cell (``kfr -m ...`` runs a sweep).

User mistakes, whether in the config (unknown key, wrong type, unknown group option) or in the
data (a malformed line), end with one line on stderr and exit code 2, and leave nothing in the
run directory; so does a full disk or a folder that may not be written, naming the path
(:func:`kfr.core.storage.storage_error`). Anything else is a bug and keeps its traceback.

In a sweep (``-m``) a config that cannot compose still stops everything up front (exit 2), but a
cell that fails while running writes ``failed.json`` into its folder and the other cells go on
(kfr.sweeps.task); the sweep ends with a summary naming the failed cells, the report table, and
exit code 1 if any cell failed.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kfr.cli.console import (
    exit_user_error,
    quiet_libraries,
    refuse_unsupported_versions,
    run_hydra_command,
)
from kfr.core import identity as _resolvers  # noqa: F401  (cell folder names, exclusions)
from kfr.core.errors import UserError
from kfr.core.paths import CONFIG_DIR
from kfr.core.schema import register_schema
from kfr.core.storage import storage_error
from kfr.sweeps.summary import failed_cells_of_last_sweep
from kfr.sweeps.task import is_multirun, objective, run_sweep_cell, run_tracked_cell

log = logging.getLogger("kfr")

# What Hydra writes into a run directory before the task starts.
_HYDRA_OUTPUT_SUBDIR = ".hydra"


def _remove_hydra_leftovers(run_dir: Path, output_root: Path) -> None:
    """After a user error, remove what Hydra wrote if the directory holds nothing else."""
    if not run_dir.is_dir():
        return
    ours = {_HYDRA_OUTPUT_SUBDIR, f"{HydraConfig.get().job.name}.log"}
    if any(child.name not in ours for child in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    # Remove the now-empty parents Hydra made (date folders), never the output root itself.
    root = output_root.resolve()
    parent = run_dir.resolve().parent
    while parent != root and root in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


register_schema()  # kfr_schema, before Hydra composes


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _run(cfg: DictConfig) -> float:
    quiet_libraries()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if is_multirun():
        # Each job of a sweep records its own failure (failed.json) and returns a number: an
        # exit here would end the whole sweep. The sweep's summary lists the failed cells.
        return run_sweep_cell(cfg, run_dir)
    try:
        results, _reused = run_tracked_cell(cfg, run_dir)
    except UserError as err:
        _remove_hydra_leftovers(run_dir, Path(cfg.paths.output_root))
        exit_user_error("kfr", err)
    except Exception as err:
        if (full := storage_error(err, run_dir)) is None:
            raise
        exit_user_error("kfr", full)
    print(results.summary())
    print(f"results: {run_dir / 'results.json'}")
    return objective(results, str(cfg.optimized_metric))


def _written_path(err: BaseException) -> str | None:
    """The file a failed write was writing, when the OSError does not name it (a ``write`` or
    ``close`` on a full disk): the innermost frame's path or open file, e.g. Hydra saving
    ``multirun.yaml``."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in ("path", "filename", "file", "f", "output_dir", "sweep_dir"):
            value = frame.f_locals.get(name)
            value = getattr(value, "name", value)  # an open file: its path
            if isinstance(value, str | Path) and "/" in str(value):
                return str(value)
    return None


def _hydra_output_dir() -> str | None:
    """The folder Hydra was writing the job's files into, if it got that far."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    for key in ("runtime.output_dir", "sweep.dir", "run.dir"):
        try:
            if where := OmegaConf.select(hydra_cfg, key):
                return str(where)
        except Exception:  # an interpolation that cannot resolve (yet)
            continue
    return None


def main() -> None:
    refuse_unsupported_versions("kfr")
    try:
        run_hydra_command("kfr", _run)
    except Exception as err:
        # Hydra's own files (the sweep folder, .hydra/) on a full disk or a read-only folder.
        if (full := storage_error(err, _written_path(err) or _hydra_output_dir())) is None:
            raise
        exit_user_error("kfr", full)
    if failed_cells_of_last_sweep():
        # Every cell ran; the summary above names the ones that failed.
        sys.exit(1)


if __name__ == "__main__":
    main()
