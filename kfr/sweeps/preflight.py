"""Checks before a sweep starts any job: mistakes every cell would share stop it at once.

:class:`SweepPreflight` (a Hydra callback, ``conf/hydra/default.yaml``) runs when a multirun
starts, before the launcher writes anything:

- a required setting (``???``) given neither on the command line nor by the grid
  (:func:`kfr.sweeps.summary.check_required_settings`);
- a value outside its declared range (:func:`kfr.core.schema.typed_config`) in the settings the
  cells share (a swept value is checked by its own cell);
- with ``hydra/launcher=slurm_*``: SLURM's commands on PATH and a controller that answers
  ``scontrol ping`` (a few seconds at most). Otherwise submitit's ``sbatch`` fails only once the
  sweep has started, with a traceback from deep inside it.

Hydra turns an exception in a callback into a warning and goes on, so a failed check prints its
one line and exits with code 2 itself (``SystemExit`` passes through Hydra).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from kfr.core.errors import USER_ERROR_EXIT_CODE, UserError
from kfr.core.schema import typed_config
from kfr.sweeps.summary import check_required_settings

PING_TIMEOUT_S = 15


def uses_slurm(config: DictConfig) -> bool:
    target = str(config.hydra.launcher.get("_target_", ""))
    return "submitit" in target.lower() and "slurm" in target.lower()


def check_controller() -> None:
    """Raise a UserError unless ``sbatch`` exists and the SLURM controller answers."""
    missing = [c for c in ("sbatch", "scontrol") if shutil.which(c) is None]
    if missing:
        raise UserError(
            f"hydra/launcher=slurm_* needs SLURM's commands, and {', '.join(missing)} is not on "
            "PATH: run on a SLURM login node (or start slurm/local_cluster.sh)",
            field="hydra/launcher",
        )
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise UserError(
            f"the SLURM controller did not answer 'scontrol ping' within {PING_TIMEOUT_S} s",
            field="hydra/launcher",
        ) from None
    lines = (ping.stdout + ping.stderr).strip().splitlines()
    answer = lines[-1].strip() if lines else ""  # the verdict is the last line
    if ping.returncode != 0 or "is UP" not in answer:
        raise UserError(
            f"no reachable SLURM controller ('scontrol ping': {answer or ping.returncode}); "
            "check SLURM_CONF, or start slurm/local_cluster.sh",
            field="hydra/launcher",
        )


class SweepPreflight(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_required_settings(config)
            cells = copy.deepcopy(config)  # the settings every cell shares, typed as theirs
            with open_dict(cells):
                cells.pop("hydra")
            if not OmegaConf.missing_keys(cells):  # else the grid sets them: cells check
                typed_config(cells)
            if uses_slurm(config):
                check_controller()
        except UserError as err:
            print(f"kfr: error: {err}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT_CODE)
