"""Which step a run is at, so that an unexpected error can be reported as "while <step>".

Each entry point (the ``rgmp`` and ``rgmp-train`` commands, the two dock jobs) calls
:func:`start_steps` when it starts; the code it runs marks its steps with :func:`step`
("reading the labels labels.tif", "training, iteration 12 of 400", ...), one line each and no
nesting to undo; the entry point's boundary names :func:`current_step` in its message. Steps are
kept per thread (a dock job runs in a worker thread). Torch-free, no cost worth measuring.
"""

from __future__ import annotations

import threading

__all__ = ["current_step", "start_steps", "step", "unexpected_error_message"]

_state = threading.local()


def start_steps(first: str = "starting") -> None:
    """A new run in this thread: its step is ``first`` until the next :func:`step`."""
    _state.step = first


def step(text: str) -> None:
    """This thread's run is now at ``text`` (a phrase that fits "while <text>")."""
    _state.step = text


def current_step() -> str:
    """The last step marked in this thread ("starting" before any)."""
    return getattr(_state, "step", None) or "starting"


def unexpected_error_message(error: BaseException, what: str, step_text: str | None = None) -> str:
    """One line for an error no code worded for a user (a bug): what failed, at which step, the
    exception in brief, and that it should be reported."""
    detail = str(error).splitlines()[0] if str(error) else ""
    return (f"{what} failed while {step_text or current_step()}: an unexpected error "
            f"({type(error).__name__}{': ' + detail if detail else ''}). This is a bug in napari-rgmp: please report it")
