"""The one boundary of the two dock jobs (propagate, fine-tune): an exception that no code worded
for a user becomes a notification naming the job's input and the step it was at
(:mod:`rgmp_model.steps`), and its traceback goes to the napari log (``logging``), never to an
uncaught-exception dialog. Expected errors (ValueError, FileNotFoundError, OSError, out of memory)
keep their own messages."""

from __future__ import annotations

import logging
from typing import Any, Callable, Generator, TypeVar

from rgmp_model.steps import current_step, start_steps, unexpected_error_message

__all__ = ["EXPECTED", "JobFailed", "guarded_call", "guarded_generator", "logger"]

logger = logging.getLogger("napari_rgmp")
EXPECTED = (ValueError, FileNotFoundError, OSError, RuntimeError, MemoryError)  # errors worded for users
T = TypeVar("T")


class JobFailed(Exception):
    """An unexpected error of a dock job, already reported to the log; its text is the notification."""


def _failed(error: BaseException, what: str) -> JobFailed:
    step = current_step()
    logger.error("napari-rgmp: %s failed while %s", what, step, exc_info=error)
    return JobFailed(unexpected_error_message(error, what, step) + "; the traceback is in the napari log")


def guarded_call(what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` in a worker: an unexpected exception is logged and raised again as
    :class:`JobFailed` whose message names ``what`` (e.g. "fine-tuning from base.pt on 'cells'")."""
    start_steps()
    try:
        return call(*args, **kwargs)
    except EXPECTED:
        raise
    except Exception as error:
        raise _failed(error, what) from error


def guarded_generator(what: str, generator: Generator[Any, Any, T]) -> Generator[Any, Any, T | str]:
    """Run ``generator`` (a job that yields results and returns a message or None): an unexpected
    exception is logged and ends it with the message of :class:`JobFailed` as its return value."""
    start_steps()
    try:
        return (yield from generator)
    except Exception as error:  # the generator already returns the expected errors' messages
        return str(_failed(error, what))
