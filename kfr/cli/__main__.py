"""``python -m kfr.cli``: the ``kfr`` command."""

from kfr.cli.main import main

main()
