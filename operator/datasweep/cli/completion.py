"""`datasweep completion bash|zsh|fish`: the shell completion script (click's), for `datasweep` or the plugin."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command("completion")
@click.argument("shell", type=click.Choice(("bash", "zsh", "fish")))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL, e.g. `source <(datasweep completion bash)` in ~/.bashrc.

    For `kubectl datasweep`: kubectl (1.26+) asks an executable `kubectl_complete-datasweep` on PATH, see
    docs/cli.md.
    """
    root = ctx.find_root()
    program = "kubectl-datasweep" if (root.info_name or "").startswith("kubectl") else "datasweep"
    complete_var = f"_{program.replace('-', '_').upper()}_COMPLETE"
    cls = get_completion_class(shell)
    assert cls is not None  # the choice above lists only shells click supports
    click.echo(cls(root.command, {}, program, complete_var).source())
