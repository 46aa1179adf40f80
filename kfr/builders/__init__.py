"""The offline dataset builders: commands run ahead of a study to make the data files a cell
then reads. Nothing here is loaded by a cell (a cell reads files through :mod:`kfr.data`).

- :mod:`kfr.builders.wikipedia`: Wikipedia knowledge bases through the MediaWiki API (``kfr-kb``);
- :mod:`kfr.builders.questions`: four-option questions from any knowledge base with an LLM, the
  paper's current-events recipe (``kfr-questions``);
- :mod:`kfr.builders.mmlu`: what a local copy of MMLU holds (``kfr-mmlu check``).

The commands themselves (argument parsing, messages, exit codes) are in :mod:`kfr.cli`.
"""
