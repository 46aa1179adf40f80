"""The top layer: every command kfr installs, and what they do at their edges.

- ``kfr`` (:mod:`kfr.cli.main`): one cell, or a sweep with ``-m``;
- ``kfr-index`` (:mod:`kfr.cli.index`): build a retrieval index ahead of the cells;
- ``kfr-report`` (:mod:`kfr.cli.report`): the comparison report of sweep folders;
- ``kfr-novel-facts``, ``kfr-mmlu``, ``kfr-kb``, ``kfr-questions``: the offline data builders;
- :mod:`kfr.cli.console`: quiet libraries, user errors as one line and exit code 2.
"""

from kfr.cli.main import main

__all__ = ["main"]
