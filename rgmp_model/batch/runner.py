"""A batch's rows as tasks on a Dask cluster (``dask.distributed``): :func:`run_batch` takes a
``Client`` (a local cluster from :func:`local_cluster`, or any cluster: SLURM through
dask-jobqueue, Kubernetes, ...), so it runs the same from the command line and a notebook.

    from rgmp_model.batch import local_cluster, read_manifest, run_batch

    with local_cluster(workers=2) as client:
        report = run_batch(client, read_manifest("plate.csv"), {"checkpoint": "model.pt"})
    print(report.table())

Rows already complete are skipped, a failing row is reported and the others go on, and Ctrl-C
(KeyboardInterrupt) stops the rows at work between two frames, keeping their frames done.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rgmp_model.batch.checks import CheckedRow, check_rows
from rgmp_model.batch.report import BatchReport, ReportRow
from rgmp_model.batch.rows import BatchRow
from rgmp_model.batch.worker import (
    RowResult,
    RowSettings,
    cpu_set,
    progress_topic,
    run_row,
    skipped,
    stop_event_name,
)

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["EXTRA", "default_workers", "local_cluster", "require_distributed", "run_batch", "run_checked",
           "torch_threads_per_worker", "workers_with_slow_malloc"]

EXTRA = "batch"
# Dask starts its worker processes with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
# adaptive mmap threshold: every large tensor is then mapped and unmapped anew, and a row runs
# about half as fast on the CPU (benchmarks/batch.py). Local workers start without it.
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
WORKER_MEMORY_GIB = 2  # a worker's share of memory when choosing how many to start (a row peaks near 0.8 GB)
STOP_WAIT_S = 120.0  # after Ctrl-C, how long the rows at work get to stop and keep their frames


def require_distributed() -> None:
    """Raise RuntimeError naming the extra to install when ``dask.distributed`` is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"rgmp batch runs its rows on Dask, and dask.distributed is not installed: "
                           f"pip install 'napari-rgmp[{EXTRA}]' (or pip install 'dask[distributed]')") from error


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    """One worker per GPU where there are GPUs, else one per CPU (one torch thread each: rows in
    parallel scale better than threads within a row, and one thread does not collapse when other
    programs take CPUs), at most one per ``WORKER_MEMORY_GIB`` of memory."""
    import psutil  # a dependency of dask.distributed

    by_memory = int(psutil.virtual_memory().total // (WORKER_MEMORY_GIB * 2**30))
    return _gpus() or max(1, min(len(cpu_set()[1]), by_memory))


@contextlib.contextmanager
def local_cluster(workers: int | None = None, **cluster_options: Any) -> Iterator[Client]:
    """A ``Client`` of a local cluster of ``workers`` processes (default :func:`default_workers`),
    one task thread each; closed on exit. The worker processes start with Ctrl-C ignored: on
    Ctrl-C in a terminal (which signals every process of the command) the client stops the rows
    itself, so that they keep their frames done. They start without Dask's MALLOC_TRIM_THRESHOLD_
    (:data:`WORKER_ENVIRON`). ``cluster_options`` go to ``LocalCluster``."""
    require_distributed()
    import dask
    from distributed import Client, LocalCluster

    from rgmp_model.cli_propagate import sigint_ignored

    options = {"n_workers": workers or default_workers(), "threads_per_worker": 1, "processes": True,
               "dashboard_address": None, "silence_logs": logging.ERROR, **cluster_options}
    with sigint_ignored(), dask.config.set(WORKER_ENVIRON):
        cluster = LocalCluster(**options)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        with sigint_ignored():
            cluster.close()


def workers_with_slow_malloc(client: Client) -> list[str]:
    """The workers started with MALLOC_TRIM_THRESHOLD_ set (see ``WORKER_ENVIRON``)."""
    import os

    found = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    return sorted(address for address, value in found.items() if value is not None)


def torch_threads_per_worker(client: Client) -> dict[str, int]:
    """Torch threads for a row on each worker: the CPUs the worker may run on shared between the
    task threads of every worker on those CPUs (2 workers of 1 thread on 2 CPUs: 1 each; a SLURM
    job's CPUs between the workers of that job)."""
    from collections import Counter

    cpus = client.run(cpu_set)
    nthreads = client.nthreads()
    sharing = Counter()
    for address, where in cpus.items():
        sharing[where] += nthreads.get(address, 1)
    return {address: max(1, len(where[1]) // sharing[where]) for address, where in cpus.items()}


def run_batch(client: Client, rows: Sequence[BatchRow], options: Mapping[str, Any] | None = None, *,
              torch_threads: int | None = None, show_progress: bool = True) -> BatchReport:
    """Check every row (:func:`check_rows`, raising ValueError before any work), then run them on
    ``client``'s cluster (:func:`run_checked`). ``options``: ``rgmp propagate`` options for all
    rows (e.g. ``{"checkpoint": "model.pt", "direction": "forward"}``), a row's own win."""
    require_distributed()
    return run_checked(client, check_rows(rows, options), torch_threads=torch_threads, show_progress=show_progress)


def run_checked(client: Client | None, rows: Sequence[CheckedRow], *, torch_threads: int | None = None,
                show_progress: bool = True) -> BatchReport:
    """Run checked rows as tasks on ``client``, one row per task, in order: complete ones skipped,
    the others each by :func:`rgmp_model.batch.worker.run_row` (``torch_threads`` per row; None:
    :func:`torch_threads_per_worker`). A progress bar over rows (and frames) on stderr. On
    Ctrl-C the rows at work stop between two frames, keeping their frames done, rows not started
    are not run, and the report says so (``report.interrupted``). ``client`` may be None when every
    row is complete."""
    results: dict[int, RowResult] = {r.number: skipped(r.number) for r in rows if r.complete}
    if len(results) == len(rows):  # nothing to run: no client needed
        return _report(rows, results)
    from distributed import Event, as_completed
    from tqdm import tqdm

    batch = uuid.uuid4().hex[:12]
    shares = () if torch_threads else tuple(torch_threads_per_worker(client).items())
    settings = RowSettings(batch, torch_threads, shares)
    frames: dict[int, int] = {}
    topic = progress_topic(batch)
    client.subscribe_topic(topic, lambda event: frames.__setitem__(event[1]["row"], event[1]["frames"]))
    stop = Event(stop_event_name(batch), client=client)
    bar = tqdm(total=len(rows), initial=len(results), unit="row", desc="rows", disable=not show_progress)
    futures = {client.submit(run_row, row, settings, key=f"rgmp-row-{row.number}-{batch}", pure=False): row
               for row in rows if not row.complete}
    completed = as_completed(futures)
    try:
        try:
            _collect(completed, futures, results, bar, frames)
        except KeyboardInterrupt:
            stop.set()
            bar.write("interrupted: stopping the rows at work (their frames done are kept) ...")
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
                _collect(completed, futures, results, bar, frames, deadline=time.monotonic() + STOP_WAIT_S)
            left = [f for f, row in futures.items() if row.number not in results]
            client.cancel(left)
            for future in left:
                results[futures[future].number] = RowResult(futures[future].number, "interrupted",
                                                            "stopped without waiting for the row to keep its frames")
    finally:
        bar.close()
        client.unsubscribe_topic(topic)
    return _report(rows, results)


def _report(rows: Sequence[CheckedRow], results: Mapping[int, RowResult]) -> BatchReport:
    by_number = {r.number: r for r in rows}
    return BatchReport(tuple(ReportRow.of(by_number[n], results[n]) for n in sorted(results)))


def _collect(completed: Any, futures: Mapping[Any, CheckedRow], results: dict[int, RowResult], bar: Any,
             frames: Mapping[int, int], deadline: float | None = None) -> None:
    """Take the rows' results as they finish, updating the bar, until all are in (or ``deadline``)."""
    shown = -1
    while not completed.is_empty():
        finished = completed.next_batch(block=False)
        for future in finished:
            row = futures[future]
            results[row.number] = _result(future, row)
            bar.update(1)
        if sum(frames.values()) != shown:
            shown = sum(frames.values())
            bar.set_postfix_str(f"{shown} frames")
        if deadline is not None and time.monotonic() > deadline:
            return
        if not finished:
            time.sleep(0.2)


def _result(future: Any, row: CheckedRow) -> RowResult:
    """The row's result, or a failure when its task did not return one (its worker died)."""
    if future.status == "cancelled":
        return RowResult(row.number, "not run", "cancelled")
    if future.status == "error":
        error = future.exception()
        return RowResult(row.number, "failed", f"the worker running this row failed ({type(error).__name__}: "
                         f"{error}); "
                         f"a worker that runs out of memory is stopped: give workers more memory or use fewer")
    return future.result()
