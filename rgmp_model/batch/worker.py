"""One row of a batch, run on a Dask worker (:func:`run_row`): ``rgmp propagate`` itself
(:func:`rgmp_model.cli_propagate.run_propagate`) writing the row's partial output, renamed into
place once complete.

The model is loaded by the first row a worker runs and kept for the next ones (the session's model
cache, :func:`rgmp_model.inference.session.load_model`). A failing row returns its message instead
of raising, so it never stops the others; a row stops between two frames when the batch is
interrupted (its frames done kept, as Ctrl-C keeps them in ``rgmp propagate``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgmp_model.batch.checks import CheckedRow, output_complete

__all__ = ["RowResult", "RowSettings", "progress_topic", "run_row", "skipped", "stop_event_name"]

STATUSES = ("done", "skipped", "failed", "interrupted", "not run")
REPORT_EVERY_S = 0.5  # frames reported to the client and the stop request polled at most this often


@dataclass(frozen=True)
class RowSettings:
    """What every row of one batch shares: ``batch`` (its id, naming its stop event and progress
    topic) and the torch threads of a row: ``torch_threads`` for every worker, else
    ``worker_threads`` (worker address, threads) pairs, else the worker's share of its CPUs."""

    batch: str
    torch_threads: int | None = None
    worker_threads: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class RowResult:
    """How a row ended: ``status`` one of ``STATUSES``, a ``message`` (the error, where the
    partial output is), the frames written, the seconds it took, the worker's peak resident memory
    (and GPU memory) while it ran, in MB, and the worker that ran it."""

    number: int
    status: str
    message: str = ""
    frames: int = 0
    seconds: float = 0.0
    peak_memory_mb: float | None = None
    peak_gpu_mb: float | None = None
    worker: str = ""
    notes: tuple[str, ...] = ()


def skipped(number: int, worker: str = "") -> RowResult:
    """The result of a row whose output is complete already."""
    return RowResult(number, "skipped", "the output exists (delete it to run the row again)", worker=worker)


def stop_event_name(batch: str) -> str:
    return f"rgmp-batch-stop-{batch}"


def progress_topic(batch: str) -> str:
    return f"rgmp-batch-progress-{batch}"


class RowProgress:
    """The part of a tqdm bar that ``run_propagate`` uses: counts the frames, reports them (at most
    every ``REPORT_EVERY_S``) and, between two frames, stops the row as Ctrl-C does when
    ``stop()`` says so. Lines written to stderr (notes, what was kept) are kept in ``lines``."""

    def __init__(self, report: Callable[[int, int], None], stop: Callable[[], bool]) -> None:
        self.total, self.n, self.lines = 0, 0, []
        self._report, self._stop, self._last = report, stop, 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= REPORT_EVERY_S:
            self._last = time.monotonic()
            self._report(self.n, self.total)
            if self._stop():
                raise KeyboardInterrupt

    def refresh(self) -> None:
        self._report(self.n, self.total)

    def write(self, text: str, file: Any = None) -> None:
        if file is sys.stderr:
            self.lines.append(text)

    def close(self) -> None:
        self._report(self.n, self.total)


class PeakMemory:
    """The process's peak resident memory (MB) while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        import psutil  # a dependency of dask.distributed

        self._process, self.peak_mb = psutil.Process(), 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
            if self._done.wait(0.02):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _this_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # called outside a Dask worker
        return None


def cpu_set() -> tuple[str, tuple[int, ...]]:
    """(machine, the CPUs this process may run on): workers with the same share those CPUs."""
    import socket

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return socket.gethostname(), tuple(cpus)


def _torch_threads(settings: RowSettings, worker: Any) -> int:
    """Set this thread's torch threads (see :class:`RowSettings`; a worker that joined after the
    batch started: its CPUs shared between its own task threads)."""
    import torch

    wanted = settings.torch_threads or dict(settings.worker_threads).get(getattr(worker, "address", None))
    if wanted is None:
        wanted = max(1, len(cpu_set()[1]) // max(1, getattr(getattr(worker, "state", None), "nthreads", 1)))
    torch.set_num_threads(wanted)
    return wanted


def _device(device: str, worker: Any) -> str:
    """``auto`` on a machine with several GPUs: the worker's own (workers named 0, 1, ... as a
    local cluster names them), so that each worker has one GPU; any other choice as given."""
    import torch

    name = str(getattr(worker, "name", ""))
    if device != "auto" or not name.isdigit() or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}"


def _remove(path: Path) -> None:
    """An earlier run's partial output of this row (it is replaced)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _move_into_place(partial: Path, out: Path) -> None:
    """Rename the complete output into place (one atomic rename; an empty folder there is replaced)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    os.replace(partial, out)


def _reporter(worker: Any, batch: str, number: int) -> Callable[[int, int], None]:
    if worker is None:
        return lambda done, total: None
    topic = progress_topic(batch)
    return lambda done, total: worker.log_event(topic, {"row": number, "frames": done, "total": total})


def _stopper(worker: Any, batch: str) -> Callable[[], bool]:
    if worker is None:
        return lambda: False
    from distributed import Event

    event = Event(stop_event_name(batch))
    return event.is_set


def _gpu_peak(device: str, reset: bool) -> float | None:
    import torch

    if not (device.startswith("cuda") or device == "auto") or not torch.cuda.is_available():
        return None
    index = torch.device(device if device.startswith("cuda") else "cuda")
    if reset:
        torch.cuda.reset_peak_memory_stats(index)
        return None
    return torch.cuda.max_memory_allocated(index) / 2**20


def run_row(row: CheckedRow, settings: RowSettings) -> RowResult:
    """Propagate one checked row into its partial output and rename it into place. Never raises
    for the row's own problems: a failure or an interruption is a :class:`RowResult` saying what
    happened and where the frames done are."""
    from rgmp_model.cli_errors import user_message
    from rgmp_model.cli_propagate import run_propagate

    started, worker = time.perf_counter(), _this_worker()
    where = str(getattr(worker, "name", "")) if worker is not None else ""
    stop = _stopper(worker, settings.batch)
    if stop():
        return RowResult(row.number, "not run", "the batch was interrupted before this row started", worker=where)
    if output_complete(row.out):
        return skipped(row.number, where)
    _torch_threads(settings, worker)
    device = _device(row.args.device, worker)
    args = argparse.Namespace(**{**vars(row.args), "out": row.partial, "device": device, "debug": True})
    progress = RowProgress(_reporter(worker, settings.batch, row.number), stop)
    status, message = "done", ""
    _gpu_peak(device, reset=True)
    with PeakMemory() as memory:
        try:
            _remove(row.partial)
            run_propagate(args, progress)
            _move_into_place(row.partial, row.out)
        except KeyboardInterrupt as error:
            status, message = "interrupted", user_message(error)
        except Exception as error:  # the row's problem, reported with its message; the others go on
            status, message = "failed", user_message(error)
    if status != "done":
        message += (f"; the {progress.n} frame(s) done are in {row.partial}" if progress.n and row.partial.exists()
                    else "; no frame was finished")
    notes = tuple(line.split("note: ", 1)[-1] for line in progress.lines if "note: " in line)
    return RowResult(row.number, status, message, progress.n, time.perf_counter() - started, memory.peak_mb,
                     _gpu_peak(device, reset=False), where, notes)
