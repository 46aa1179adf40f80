"""One cell of the study (model x data x method x eval), and what its folder holds.

- :mod:`kfr.cell.run`: :func:`run_cell`, the flow of one cell;
- :mod:`kfr.cell.results`: :class:`CellResults`, results.json typed;
- :mod:`kfr.cell.folder`: results.json / failed.json / unfinished, and scanning sweep folders.
"""

from kfr.cell.results import Cell, CellResults
from kfr.cell.run import completed_results, run_cell

__all__ = ["Cell", "CellResults", "completed_results", "run_cell"]
