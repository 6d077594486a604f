"""The Propagate widget's non-Qt parts: the job its worker runs, the session kept between jobs,
the messages shown to the user, and the handle that owns a running worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from rgmp_model.errors import dock_message
from rgmp_model.inference.options import PropagationOptions
from rgmp_model.inference.session import open_session
from rgmp_model.steps import step


@dataclass(frozen=True)
class PropagationJob:
    """One Run or correction, checked on the GUI thread. ``key`` names the session it needs
    (image layer and data, stack selection, checkpoint file and version, options); ``keyframes``
    and ``boxes`` ({frame: (H, W) labels}) are what the session must hold; ``from_keyframes``
    limits the propagation to those keyframes' stretches (None: the whole stack)."""

    key: tuple
    checkpoint: str
    frames: Any  # (T, H, W[, C]) array-like, read lazily in the worker
    options: PropagationOptions
    keyframes: Mapping[int, np.ndarray] = field(default_factory=dict)
    boxes: Mapping[int, np.ndarray] = field(default_factory=dict)
    from_keyframes: tuple[int, ...] | None = None


class AdaptationStep(NamedTuple):
    """One step of test-time adaptation before the frames: ``iteration`` of ``total``, its loss."""

    iteration: int
    total: int
    loss: float


class JobResult(NamedTuple):
    """One propagated frame: index, (H, W) labels, {object id: confidence}, frames in the job."""

    frame: int
    labels: np.ndarray
    confidence: dict[int, float]
    total: int


class SessionKeeper:
    """The widget's one session per (image, model, options), as Cutie's GUI keeps one
    InferenceCore per video: kept between Runs and corrections, so that unchanged keyframes keep
    their encoded reference features; rebuilt when the job's key changes. ``corrections`` are the
    keyframes taken from the output layer; they outlive a rebuilt session (other options) and go
    with the inputs (``forget``). While a job runs only its worker uses the session."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.session: Any = None
        self.corrections: dict[int, np.ndarray] = {}
        self.working_size: tuple[int, int] | None = None  # (h, w) the last job's frames ran at (session.working)

    def session_for(self, job: PropagationJob) -> Any:
        """The kept session when it fits ``job``, else a new one (loads the model: worker only)."""
        if self.session is None or self.key != job.key:
            self.key, self.session = None, None  # the old session's memory goes first
            step(f"loading the model {job.checkpoint} and opening the stack")
            self.session = open_session(job.checkpoint, job.frames, job.options)
            self.key = job.key
        return self.session

    def forget(self) -> None:
        """Other inputs: no session and no corrections any more."""
        self.key, self.session = None, None
        self.corrections.clear()


def propagate_job(job: PropagationJob, keeper: SessionKeeper) -> Iterator[JobResult]:
    """The worker's generator: the kept (or a new) session, made to hold the job's keyframes
    (box starts are refined by the network; unchanged keyframes are not encoded again), then
    the session's results, each with the job's frame total; with ``options.adapt`` first the
    steps of test-time adaptation (none while the session's adapted network is still valid).

    Expected failures (a bad checkpoint, out of memory, ...) end the job with their message as
    the return value: superqt's generator worker would swallow a RuntimeError, and napari would
    report the others as crashes with a traceback."""
    try:
        session = keeper.session_for(job)
        step(f"setting the keyframes {sorted(job.keyframes) or sorted(job.boxes)}")
        session.set_keyframes(job.keyframes, job.boxes)
        if job.options.adapt:  # stopped here (Cancel), the session keeps its network as it was
            step("adapting the model to the keyframes")
            for adaptation in session.adapting():
                yield AdaptationStep(*adaptation)
        total = session.total_frames(from_keyframes=job.from_keyframes)
        step("propagating the first frame")
        for t, labels, confidence in session.propagate(from_keyframes=job.from_keyframes):
            keeper.working_size = session.working_size  # as used (refitted to small objects, or after a retry)
            yield JobResult(t, labels, confidence, total)
            step(f"propagating the frame after frame {t}")
    except (ValueError, FileNotFoundError, RuntimeError, MemoryError) as error:
        return dock_message(error)  # anything else: napari_rgmp.run_guard, around this generator
    return None


class JobHandle:
    """The running worker and its progress bar, held apart from the widget so that the widget's
    destruction (the dock or the viewer closing) can still stop them."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.progress: Any = None

    def stop(self, *_: Any) -> None:
        if self.worker is not None:
            self.worker.quit()

    def abandon(self, *_: Any) -> None:
        """The widget is gone: no more callbacks into it, stop the worker, close the bar."""
        if self.worker is not None:
            for signal in (self.worker.yielded, self.worker.returned, self.worker.finished):
                try:
                    signal.disconnect()
                except (TypeError, RuntimeError):
                    pass
            self.worker.quit()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
