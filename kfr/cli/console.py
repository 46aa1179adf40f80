"""What every kfr command does at its edges: quiet library chatter, and turn user mistakes into
one line on stderr with exit code 2 instead of a traceback.

The Hydra entry points (``kfr``, ``kfr-index``) run through :func:`run_hydra_command`; commands
with argparse call :func:`exit_user_error` themselves.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from kfr.core.errors import USER_ERROR_EXIT_CODE, UserError
from kfr.core.versions import check_supported_versions


def quiet_libraries() -> None:
    """Keep the console for kfr's own progress: no per-load bars or notices from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Retrieval's libraries announce every load at INFO (Hydra's root level).
    for name in ("sentence_transformers", "faiss.loader"):
        logging.getLogger(name).setLevel(logging.WARNING)


def config_error_message(err: BaseException) -> str:
    """A Hydra / OmegaConf composition error (and its cause) as one line naming the key."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    cause = err.__cause__
    if cause is not None:
        lines += [line for line in str(cause).splitlines() if line.strip()]
    # OmegaConf appends "full_key: ...", "object_type=..." lines; keep what names the problem.
    kept = [
        line.strip()
        for line in lines
        if not line.strip().startswith(("object_type", "reference_type"))
    ]
    return " | ".join(dict.fromkeys(kept))


def exit_user_error(prog: str, err: UserError) -> NoReturn:
    # SystemExit passes through Hydra's job runner, which would log any Exception's traceback.
    print(f"{prog}: error: {err}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


def refuse_unsupported_versions(prog: str) -> None:
    """Every command's first step: a library outside kfr's declared range (kfr.core.versions)
    exits 2 with one line, before anything is read or written."""
    try:
        check_supported_versions()
    except UserError as err:
        exit_user_error(prog, err)


def run_hydra_command(prog: str, app: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; bad config or input exits 2 with one line."""
    # Let exceptions reach this function instead of Hydra printing and exiting with code 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except UserError as err:
        exit_user_error(prog, err)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"{prog}: config error: {config_error_message(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
