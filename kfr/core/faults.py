"""Named fault-injection points: where the fault suite (tests/faults/) kills a process.

Library code calls :func:`point` at the moments a crash matters (a cache build starting or about
to publish, a file about to replace another, a training step, a checkpoint, a scoring batch, a
cell's outputs). Unless ``KFR_FAULT_KILL_AT`` or ``KFR_FAULT_LOG`` (or ``KFR_FAULT_RAISE_AT``) is
set when the process starts, a call is one comparison.

- ``KFR_FAULT_KILL_AT=<name>:<n>``: the process kills itself with SIGKILL (no clean-up, no
  ``finally``: a power cut or an OOM kill) at the n-th time (1-based) it passes ``<name>``;
  ``*:<n>``: at the n-th point it passes, whatever its name.
- ``KFR_FAULT_RAISE_AT=<name>:<n>``: raises :class:`InjectedFault` there instead (a cell that
  fails, for the tests of what a failing cell leaves behind).
- ``KFR_FAULT_LOG=<file>``: every point passed is appended to the file as one line
  ``<pid> <name> <n> <detail>`` (the fault suite reads the points of a run and counts cache
  builds from it).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "KFR_FAULT_KILL_AT"
RAISE_ENV = "KFR_FAULT_RAISE_AT"
LOG_ENV = "KFR_FAULT_LOG"


class InjectedFault(RuntimeError):
    """Raised at the point ``KFR_FAULT_RAISE_AT`` names."""


def _kill_spec(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.rpartition(":")
    if not name or not count.isdigit() or int(count) < 1:
        raise ValueError(f"expected <point>:<n> with n >= 1, got {value!r}")
    return name, int(count)


_KILL = _kill_spec(os.environ.get(KILL_ENV))
_RAISE = _kill_spec(os.environ.get(RAISE_ENV))
_LOG = os.environ.get(LOG_ENV) or None
_ACTIVE = _KILL is not None or _RAISE is not None or _LOG is not None
_hits: Counter[str] = Counter()


def point(name: str, detail: str = "") -> None:
    """A named point where the fault suite may kill this process (see the module docstring)."""
    if not _ACTIVE:
        return
    _hits[name] += 1
    _hits["*"] += 1
    n = _hits[name]
    if _LOG is not None:
        line = f"{os.getpid()} {name} {n} {detail}".rstrip() + "\n"
        # One write of a short line to a file opened for appending: lines of concurrent
        # processes never interleave.
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    if (name, n) == _KILL or ("*", _hits["*"]) == _KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    if (name, n) == _RAISE:
        raise InjectedFault(f"fault injected at {name}:{n}")


__all__ = ["KILL_ENV", "LOG_ENV", "RAISE_ENV", "InjectedFault", "point"]
