"""The commands' error wording and exit codes: :mod:`rgmp_model.errors` (the one error-wording
module), importable from here as before."""

from rgmp_model.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, exit_code, is_user_error, user_message

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "exit_code", "is_user_error", "user_message"]
