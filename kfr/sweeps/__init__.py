"""Multirun sweeps: what each job runs, and the end-of-sweep summary.

- :mod:`kfr.sweeps.task`: what each job of ``kfr`` runs (typed config, tracking, skip, failure
  capture);
- :mod:`kfr.sweeps.summary`: the Hydra callback that lists failed cells and prints the report.

Cell folders are named by :func:`kfr.core.identity.cell_dirname` and hold what
:mod:`kfr.cell.folder` describes. Resuming: a sweep directory is stable for experiments
(``outputs/<experiment>/sweep``) and each cell's folder is named by its overrides, so running
the same command again finds every finished cell's ``results.json`` (same config hash) and runs
only the others.
"""
