"""Connections that never keep a dock alive nor call into one that is gone.

A dock that is closed, or made and never docked, is deleted (its Python object collected, or its
Qt object destroyed while Python still holds it). A viewer, layer or registry event connected to
one of its bound methods would then keep it alive, or call into a deleted widget ("wrapped C/C++
object has been deleted"), or, for a lambda connected to ``destroyed``, run Python code in the middle
of the garbage collection that destroys it, which crashed the process. :func:`weak_slot` holds
the receiver weakly and does nothing once it is gone.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable

__all__ = ["is_deleted", "weak_slot"]


def is_deleted(obj: Any) -> bool:
    """Whether ``obj`` is a Qt object whose C++ side was destroyed (False for other objects)."""
    try:
        from qtpy import API_NAME
    except ImportError:  # pragma: no cover - no Qt binding
        return False
    try:
        if API_NAME.startswith("PyQt"):
            from qtpy import sip

            return bool(sip.isdeleted(obj))
        import shiboken6  # PySide6

        return not shiboken6.isValid(obj)
    except TypeError:  # not a Qt object
        return False


def weak_slot(method: Callable[..., Any]) -> Callable[..., None]:
    """A plain function calling the bound ``method`` while its object lives and is not a deleted
    Qt object; once it is gone, calls do nothing. The arguments an event or signal passes are
    given on as far as ``method`` takes them (``_fill_axes(self)`` gets none)."""
    receiver = weakref.ref(method.__self__)
    function = method.__func__
    taken = _positional(method)

    def slot(*args: Any) -> None:
        obj = receiver()
        if obj is None or is_deleted(obj):
            return
        function(obj, *args[:taken])

    slot.__name__ = f"weak_{function.__name__}"
    slot.__qualname__ = f"weak_slot({function.__qualname__})"
    return slot


def _positional(method: Callable[..., Any]) -> int | None:
    """How many positional arguments bound ``method`` takes (None: any number)."""
    parameters = inspect.signature(method).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
