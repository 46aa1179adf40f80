"""Run-level logging of every cell: Weights & Biases (offline by default), a CSV row, or nothing.

:func:`open_tracker` opens the logger that ``cfg.logger`` names for one cell and always closes
it (``wandb.finish()`` in ``finally``), so a failing job of a sweep never leaks into the next
job's run. The tracker hands fine-tuning the Lightning loggers that write into the same run
(``tracker.training_loggers()``: training curves beside the cell's accuracy) and logs the cell's
:class:`~kfr.cell.results.CellResults` in memory.

The W&B run: group = ``experiment_name``, job_type = method, tags = [method, model, data], a
readable name (:func:`run_name`), the resolved config, summary metrics (acc, acc_norm, their 95%
intervals, recall@k when retrieving) and a table of per-question predictions.
"""

from kfr.tracking.base import Tracker, flat_metrics, run_name, run_tags
from kfr.tracking.open import open_tracker, tracker_kind

__all__ = ["Tracker", "flat_metrics", "open_tracker", "run_name", "run_tags", "tracker_kind"]
