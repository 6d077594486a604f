"""The thread workers of a dock, and what becomes of them when the dock or the viewer closes.

A worker still running when the process exits aborts it: Python deletes the worker's Qt signals
object under the thread, whose next signal raises "wrapped C/C++ object of type
WorkerBaseSignals has been deleted" and Qt aborts. So every worker a dock starts is tracked
here from its creation (a napari worker starts a moment later, from the event loop), and when
the dock or the viewer closes each is asked to stop where it can be (a propagation stops after
its frame, a fine-tuning after its iteration; an export or a model description is not cut
short) and then awaited, the dock's own handlers running as usual.
"""

from __future__ import annotations

import logging
import time
import weakref
from functools import partial
from typing import Any, Callable

from qtpy.QtCore import QEventLoop, QThread
from qtpy.QtWidgets import QApplication

logger = logging.getLogger(__name__)

AWAIT_SECONDS = 120.0  # the longest a closing dock waits (a fine-tuning iteration on a slow CPU)


def quit_worker(worker: Any) -> None:
    """Stop a generator worker after its current step (a function worker then skips ``returned``)."""
    worker.quit()


class DockWorkers:
    """The workers one part of a dock created and that have not finished yet; ``stop(worker)``
    asks one to stop (None: the owner stops them its own way, or they run to their end)."""

    def __init__(self, stop: Callable[[Any], None] | None = None) -> None:
        self._live: list[Any] = []
        self._stop = stop

    def track(self, worker: Any) -> Any:
        """Follow ``worker`` (before it starts) until its ``finished`` signal; returns it."""
        self._live.append(worker)
        # a weak reference: the connection belongs to the worker and must not keep it alive
        worker.finished.connect(partial(self._finished, weakref.ref(worker)))
        return worker

    def _finished(self, worker: weakref.ref) -> None:
        self._live = [w for w in self._live if w is not worker()]

    @property
    def live(self) -> list[Any]:
        """The tracked workers that have not finished (started or about to start)."""
        return list(self._live)

    def stop_and_wait(self, timeout: float = AWAIT_SECONDS) -> bool:
        """Ask every live worker to stop (``stop``), then process events until all have finished
        (at most ``timeout`` s); True when none is left."""
        for worker in self._live if self._stop is not None else ():
            self._stop(worker)
        deadline = time.monotonic() + timeout
        while self._live and time.monotonic() < deadline:
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, 50)
            QThread.msleep(5)
        if self._live:
            logger.warning("%d napari-rgmp worker(s) still running after %.0f s", len(self._live), timeout)
        return not self._live
