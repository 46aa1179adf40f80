"""The GPU check's scheduler: up to ``--jobs`` steps at a time, in plan order, under three rules.

1. An ``alone`` job is a barrier: it starts once every job before it in the plan has finished,
   runs with nothing else, and nothing after it starts before it has finished. ``prepare`` (rag
   and raft need the encoder it writes) and ``gpu_tests`` are such jobs.
2. Jobs of the same ``group`` never overlap. The cells that start a distributed process group
   (DDP, FSDP) are one group: each binds a rendezvous port, ``MASTER_PORT`` or else one that
   Lightning's ``find_free_network_port`` picks by binding port 0 and closing it again, which
   two processes starting at once can both be given. One at a time needs no port bookkeeping
   and costs nothing while other cells fill the slots; the other cells bind no port.
3. Otherwise the first job in plan order that rules 1 and 2 let start takes a free slot: a job
   held back by rule 2 does not hold back the ones after it.

Each job runs in a thread of its own (the work itself is a subprocess); ``on_done`` is called in
the calling thread, one job at a time, in completion order, with the most jobs that ran at once
so far, and may stop the plan (no GPU).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    alone: bool = False
    group: str | None = None


def _can_start(job: Job, earlier: Sequence[Job], running: dict[str, Job], limit: int) -> bool:
    if job.alone:
        return not running and not earlier
    if any(j.alone for j in (*running.values(), *earlier)) or len(running) >= limit:
        return False
    return job.group is None or all(j.group != job.group for j in running.values())


def run_plan(
    jobs: Sequence[Job],
    run: Callable[[str], None],
    limit: int,
    on_done: Callable[[str, int], bool] = lambda name, peak: True,
) -> int:
    """Run ``run(job.name)`` for every job under the module's rules, at most ``limit`` at once.

    ``on_done(name, peak)`` returning False starts nothing more (the running jobs finish).
    Returns the most jobs that ran at the same time.
    """
    pending, running = list(jobs), {}
    finished: queue.Queue[str] = queue.Queue()
    peak, go_on = 0, True

    def work(name: str) -> None:
        try:
            run(name)
        finally:
            finished.put(name)

    while running or (pending and go_on):
        for job in list(pending) if go_on else []:
            if _can_start(job, pending[: pending.index(job)], running, max(1, limit)):
                pending.remove(job)
                running[job.name] = job
                threading.Thread(target=work, args=(job.name,), daemon=True).start()
        peak = max(peak, len(running))
        if not running:
            break  # the rules always let the first pending job start on an idle slot: stopped
        name = finished.get()
        del running[name]
        go_on = on_done(name, peak) and go_on
    return peak
