"""Warnings as a command-line user should read them: one line with the message, no source line.

Python's default format prints the file, line and source text of the `warnings.warn` call (or of whatever
frame `stacklevel` lands on: inside a DataLoader worker or argparse, that is noise). CLIs call
`short_warnings()` once at start; libraries and tests keep the default format.
"""

import warnings


def _format(message, category, filename, lineno, line=None):
    kind = "warning" if category is UserWarning else category.__name__
    return f"{kind}: {message}\n"


def short_warnings():
    """Make every warning of this process print as `warning: <message>` (category named when not UserWarning)."""
    warnings.formatwarning = _format
