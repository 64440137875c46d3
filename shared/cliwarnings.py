"""Warnings as a command line should print them: `UserWarning: <message>`, one line, without the
source line of the library code that raised it (which is noise to someone running a script)."""

import warnings


def _one_line(message, category, filename, lineno, line=None):
    return f"{category.__name__}: {message}\n"


def plain_warnings():
    """Call once in a script's `if __name__ == "__main__":` block (never from library code)."""
    warnings.formatwarning = _one_line
