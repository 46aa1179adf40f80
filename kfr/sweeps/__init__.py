"""Multirun sweeps: one folder per cell, per-cell failure records, and the end-of-sweep summary.

- :mod:`kfr.sweeps.jobs`: cell folder names, ``failed.json``, scanning a sweep's cell folders;
- :mod:`kfr.sweeps.task`: what each job of ``kfr`` runs (tracking, skip, failure capture);
- :mod:`kfr.sweeps.summary`: the Hydra callback that lists failed cells and prints the report.

Resuming: a sweep directory is stable for experiments (``outputs/<experiment>/sweep``) and each
cell's folder is named by its overrides, so running the same command again finds every finished
cell's ``results.json`` (same config hash) and runs only the others.
"""
