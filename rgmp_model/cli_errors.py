"""How the ``rgmp`` commands turn exceptions into messages and exit codes (no tracebacks).

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

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "exit_code", "is_user_error", "user_message"]

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
