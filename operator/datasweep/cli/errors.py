"""The CLI's exit codes and the errors that carry them."""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class BadInput(click.ClickException):
    """Exit code 2: the message names the file/field/argument and the fix."""

    exit_code = EXIT_BAD_INPUT


class Failed(click.ClickException):
    exit_code = EXIT_FAILED
