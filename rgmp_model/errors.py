"""How errors are worded for users, in one place: the ``rgmp`` and ``rgmp-train`` commands (messages
and exit codes, no tracebacks), the Propagate dock and the Fine-tune dock; and the one test of
"an allocation failed" (:func:`is_out_of_memory`). Torch-free.

Commands:

- ValueError, FileNotFoundError, RuntimeError (and MemoryError): the problem with the inputs or
  the run, already worded for a user by the code that raised it: exit code 2 (1 once a run has
  written part of its output, see :mod:`rgmp_model.cli_propagate`).
- Other OSErrors (disk full, read-only folder, permission): the file and the reason in words,
  exit code 1.
- Ctrl-C (KeyboardInterrupt): exit code 130, as a shell reports SIGINT.
- Anything else is a bug: one line naming it, exit code 1; ``rgmp --debug ...`` shows the
  traceback instead.
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "FINETUNE_OUT_OF_MEMORY", "OutOfMemory", "dock_message",
           "exit_code", "finetune_message", "finetune_out_of_memory", "is_out_of_memory", "is_user_error",
           "user_message"]

EXIT_USAGE = 2  # a problem with the inputs or options, found before anything was written
EXIT_ERROR = 1  # the run failed (I/O, out of memory, a damaged frame part-way)
EXIT_INTERRUPTED = 130  # Ctrl-C

_REASONS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "an input/output error (a failing disk or a lost network share)",
}


_ALLOCATION = ("out of memory", "out of gpu memory", "can't allocate memory", "unable to allocate")
FINETUNE_OUT_OF_MEMORY = "out of memory while fine-tuning"


class OutOfMemory(RuntimeError, MemoryError):
    """Propagation ran out of memory again after its retry (the message says what to try)."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that an allocation failed (GPU, CPU or numpy: ``torch.OutOfMemoryError``,
    ``MemoryError``, torch's CPU allocator's "can't allocate memory", ...), not another failure;
    an :class:`OutOfMemory` is already the final word (False)."""
    if isinstance(error, OutOfMemory):
        return False
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, Exception) and any(m in text for m in _ALLOCATION)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` carries a message meant for a user (see the module docstring)."""
    return isinstance(error, (ValueError, RuntimeError, MemoryError, OSError))


def user_message(error: BaseException) -> str:
    """One line saying what went wrong, without internal exception names for expected errors."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, FileNotFoundError) and error.filename is None:
        return str(error)  # raised by this project with a full message
    if isinstance(error, OSError) and error.errno is not None:
        reason = _REASONS.get(error.errno) or error.strerror or str(error)
        if error.errno == errno.ENOSPC and error.strerror and "free space" in error.strerror:
            reason = error.strerror  # the output's own check: how much it needs and how much is free
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{reason}"
    if is_user_error(error):
        return str(error) or type(error).__name__
    from rgmp_model.steps import unexpected_error_message  # the step the run was at, named

    return f"{unexpected_error_message(error, 'the command')} with the command line (--debug shows the traceback)"


def exit_code(error: BaseException) -> int:
    """The exit code of a run that ended with ``error`` before writing anything (module docstring)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, (ValueError, FileNotFoundError, RuntimeError)) and not isinstance(error, MemoryError):
        return EXIT_USAGE
    return EXIT_ERROR


def dock_message(error: BaseException) -> str:
    """What the Propagate dock tells the user about an expected failure of a propagation."""
    message = str(error)
    if is_out_of_memory(error) and "smaller" not in message:
        return f"out of GPU memory: lower the working size, or run on the CPU ({message.splitlines()[0]})"
    return message


def finetune_out_of_memory(options: dict[str, Any] | None = None) -> str:
    """What to try when fine-tuning ran out of memory, with the values that were used."""
    options = options or {}
    batch = f" (now {options['batch_size']})" if "batch_size" in options else ""
    crop = f" (now {options['crop_size'][0]} px)" if "crop_size" in options else ""
    return (f"{FINETUNE_OUT_OF_MEMORY}: lower the batch size{batch} or the crop size{crop}, or choose the CPU as "
            "device (slower: use fewer iterations). The base checkpoint is unchanged and no checkpoint was saved")


def finetune_message(error: BaseException, options: dict[str, Any] | None = None) -> str:
    """What the Fine-tune dock tells the user about an error raised by a run with ``options``."""
    if is_out_of_memory(error):
        return finetune_out_of_memory(options)
    if isinstance(error, (ValueError, FileNotFoundError)):
        return str(error)
    return f"fine-tuning failed ({type(error).__name__}: {error})"
