"""Data-parallel training (DDP) for one cell: the other ranks' processes, started and cleaned up.

When nothing has started the ranks (no SLURM tasks, no torchrun), Lightning's launcher starts
ranks 1..N-1 itself by running the command again. Under Hydra it re-runs ``sys.argv`` -- the
whole sweep, for ``kfr -m`` -- so kfr gives it the command of this one cell instead:
``python -m kfr.cli <the cell's overrides> hydra.run.dir=<the cell's folder>``. Each such
process composes the same cell, trains its share of the blocks and leaves once training ends
(:mod:`kfr.finetune.checkpoints`); rank 0 saves and scores.

Rank 0 of a local launch is the process that runs the cell: in a sweep on Hydra's basic
launcher, the sweep itself. :func:`launched_ranks` gives it back its state after training (the
process group destroyed, the launcher's environment variables and thread count restored), so
the next cell of the sweep starts as the first did. The same code runs on CPUs (gloo) and GPUs
(NCCL); SLURM tasks (``hydra/launcher=slurm_*`` with ``tasks_per_node`` > 1) are started by
``srun`` and only join.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

# What Lightning's launcher sets in rank 0's own environment when it starts the other ranks.
_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra command-line flags that take a value: kept for the ranks' command (every other flag,
# -m included, is dropped).
_VALUE_FLAGS = ("-cp", "-cn", "-cd", "--config-path", "--config-name", "--config-dir")


def _quoted(value: str) -> str:
    """A Hydra override value quoted as such: sweep folder names hold ``=`` and ``,``."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def cell_command(local_rank: int, argv: Sequence[str] | None = None) -> tuple[list[str], str]:
    """(command, cwd) that runs this Hydra cell alone, as rank ``local_rank``.

    The cell's own overrides (in a sweep: its point of the sweep) replace the command line's;
    config-location flags are kept; the rank writes into the cell's folder but no ``.hydra``
    copy of its own (rank 0 wrote it).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    argv = list(sys.argv[1:] if argv is None else argv)
    flags: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_FLAGS and i + 1 < len(argv):
            flags += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith(tuple(f"{f}=" for f in _VALUE_FLAGS)):
            flags.append(arg)
        i += 1
    command = [
        sys.executable,
        "-m",
        "kfr.cli",
        *flags,
        *hydra_cfg.overrides.task,
        f"hydra.run.dir={_quoted(hydra_cfg.runtime.output_dir)}",
        "hydra.output_subdir=null",
        f"hydra.job.name=rank_{local_rank}",
    ]
    return command, get_original_cwd()


class _CellLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ranks 1..N-1, with the command of this cell (module docstring)."""

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # a script, not the kfr command: Lightning's way
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            command, cwd = cell_command(local_rank)
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))


class CellDDPStrategy(DDPStrategy):
    """DDP whose locally started ranks run this cell only (see the module docstring)."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = _CellLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )


@contextmanager
def launched_ranks() -> Iterator[None]:
    """Around a fit: afterwards, rank 0 of a local launch is as it was before (module
    docstring); processes that an outside launcher started (SLURM, torchrun) are left alone."""
    external = "LOCAL_RANK" in os.environ  # Lightning's own test for "started from outside"
    saved = {name: os.environ.get(name) for name in (*_LAUNCH_VARIABLES, "OMP_NUM_THREADS")}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if not external:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            torch.set_num_threads(threads)
