"""Where a sharded fit's tasks run (``model/sharded.py``): here, one after another (``Runner``), or on a
Dask cluster (``DaskRunner``): a ``LocalCluster`` it starts (``workers``) or an existing scheduler.

Dask runs each task on some worker and, if that worker dies, again on another (a task's result is kept
once, under its key: nothing lost, nothing twice).  Workers on one machine share the compiled samplers
through the disk cache (``nuts.py``), so each structure compiles once per machine.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from .errors import FitError


def _say_progress(done: int, total: int, label: str, start: float, progress: bool) -> None:
    if progress:
        elapsed = time.perf_counter() - start
        left = elapsed / done * (total - done)
        print(f"    {label} done ({done}/{total}), {elapsed:.0f} s so far, about {left:.0f} s left",
              file=sys.stderr, flush=True)


def _whole(k: int, result):
    """What a runner keeps of a task's result by default: all of it."""
    return result


class Runner:
    """Tasks run here, one after another."""

    fit_options: dict = {}  # what every fit on this runner takes (cores per task)
    parallel = False  # tasks at the same time (their own progress lines would interleave)

    def submit(self, function, *args):
        """Start a task in the background where there is one; None here (nothing runs alongside)."""
        return None

    def result(self, handle):
        """What a ``submit`` handle gave (None for None)."""
        return handle

    def run(self, tasks: list[tuple], labels: list[str], progress: bool, keep=None) -> list:
        """Each ``(function, *args)`` of ``tasks``, results in order; ``keep(k, result)``, when given, is
        what is kept of task ``k``'s result, called as it lands."""
        start, results = time.perf_counter(), []
        keep = keep or _whole
        for k, (function, *args) in enumerate(tasks):
            results.append(keep(k, function(*args)))
            _say_progress(k + 1, len(tasks), labels[k], start, progress)
        return results

    def describe(self) -> dict:
        return {"runner": "in process"}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DaskRunner(Runner):
    """Tasks on Dask workers: a ``LocalCluster`` of ``workers`` processes (one thread each, and the
    machine's cores shared among them for the chains), or the cluster at ``scheduler`` (each task's chains
    use its worker machine's cores: start one single-threaded worker per machine)."""

    parallel = True

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        from distributed import Client, LocalCluster

        if (workers is None) == (scheduler is None):
            raise ValueError("give either workers (a local cluster) or scheduler (an existing one)")
        self.cluster = None
        if scheduler is None:
            import dask

            # Dask sets MALLOC_TRIM_THRESHOLD_ in its workers' environment, which turns off glibc's adaptive
            # mmap threshold: every large numpy temporary is then mapped and unmapped afresh, and the Laplace
            # engine's blocks ran 2x slower in a worker than in this process.  The workers keep glibc's default.
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
            self.fit_options = {"cores": max(1, (os.cpu_count() or 1) // workers)}
        self.client = Client(scheduler or self.cluster)
        self.scheduler = scheduler

    def submit(self, function, *args):
        return self.client.submit(function, *args, pure=False)

    def result(self, handle):
        return None if handle is None else handle.result()

    def run(self, tasks: list[tuple], labels: list[str], progress: bool, keep=None) -> list:
        from distributed import as_completed

        keep = keep or _whole
        start, run_id = time.perf_counter(), uuid.uuid4().hex[:8]
        futures = [self.client.submit(function, *args, pure=False, key=f"gaelp-{run_id}-{label.replace(' ', '-')}")
                   for label, (function, *args) in zip(labels, tasks)]
        index = {future.key: k for k, future in enumerate(futures)}
        results, pending = [None] * len(tasks), as_completed(futures)
        del futures  # each result is fetched as it lands and its future dropped: workers do not hoard results
        for done, future in enumerate(pending, start=1):
            k = index[future.key]
            if future.status == "error":
                raise FitError(f"{labels[k]} failed on its worker: {future.exception()}")
            results[k] = keep(k, future.result())
            future.release()
            _say_progress(done, len(tasks), labels[k], start, progress)
        return results

    def describe(self) -> dict:
        workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        return {"runner": "dask", "workers": workers, "scheduler": self.scheduler or "local cluster"}

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
