"""The fault suite's figures, written when the session ends (see tests/faults/harness.py)."""

from __future__ import annotations

from tests.faults import harness


def pytest_sessionfinish(session, exitstatus):
    if any(harness.FIGURES.values()):
        path = harness.write_figures()
        print(f"\nfault suite figures: {path}")
