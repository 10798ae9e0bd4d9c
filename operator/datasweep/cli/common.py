"""What every datasweep command shares: exit codes, output formats, and the local/cluster backend rule."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

# in a module of their own so that cli/backends.py, which `choose_backend` imports, need not import this one
from datasweep.cli.errors import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from datasweep.cli.errors import EXIT_FAILED as EXIT_FAILED
from datasweep.cli.errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from datasweep.cli.errors import EXIT_OK as EXIT_OK
from datasweep.cli.errors import BadInput as BadInput
from datasweep.cli.errors import Failed as Failed

F = TypeVar("F", bound=Callable[..., Any])


# Piped output (scripts, tests, CI logs) is not cut at 80 columns.
PIPE_WIDTH = 240


def stdout_console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else PIPE_WIDTH)


OUTPUT_FORMATS = ("table", "wide", "name", "json", "yaml")
# `-o wide|name` and `--no-headers` shape the table of whichever command runs (one command per process)
_VIEW = {"wide": False, "name": False, "no_headers": False}


def _output_callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _VIEW["wide"], _VIEW["name"] = value == "wide", value == "name"
    return "table" if value in ("wide", "name") else value


def _no_headers_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    _VIEW["no_headers"] = value
    return value


def wide_requested() -> bool:
    return _VIEW["wide"]


def output_option(func: F) -> F:
    func = click.option(
        "--no-headers",
        is_flag=True,
        expose_value=False,
        callback=_no_headers_callback,
        help="tables without the title and header lines (for scripts that read columns)",
    )(func)
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_FORMATS),
        default="table",
        show_default=True,
        callback=_output_callback,
        help="table for people (wide: more columns; name: the names only), json or yaml for scripts",
    )(func)


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=str)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def print_table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], name_column: str | None = None
) -> None:
    """A table for people: box lines on a terminal, plain ASCII columns (kubectl style) when piped; with
    `-o name` only the `name_column` values, one per line."""
    if _VIEW["name"] and name_column is not None:
        index = list(columns).index(name_column)
        for row in rows:
            click.echo(row[index])
        return
    terminal = sys.stdout.isatty()
    table = Table(
        title=None if _VIEW["no_headers"] else title,
        title_justify="left",
        show_header=not _VIEW["no_headers"],
        show_edge=False,
        pad_edge=False,
        box=box.SIMPLE_HEAD if terminal else None,
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout_console().print(table)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# ---- backend selection ----

ROOT_ENV = "DATASWEEP_ROOT"
DEFAULT_ROOT = Path("Data_v2/synthetic")


def kubeconfig_available() -> bool:
    """A kubeconfig exists: $KUBECONFIG names an existing file, or ~/.kube/config exists, or we run in a pod."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return any(Path(part).is_file() for part in env.split(os.pathsep) if part)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    return (Path.home() / ".kube" / "config").is_file()


def backend_options(func: F) -> F:
    """--root DIR (local) | --cluster [-n NS] [--context C]; see `choose_backend` for the default."""
    func = click.option("--context", "kube_context", default=None, help="kubeconfig context (cluster backend)")(func)
    func = click.option(
        "-n",
        "--namespace",
        default=None,
        help="namespace (cluster backend; default: the context's namespace)",
    )(func)
    func = click.option("--cluster", is_flag=True, help="use the cluster from the kubeconfig even if --root is set")(
        func
    )
    func = click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=ROOT_ENV,
        default=None,
        help=f"local store root (env {ROOT_ENV}); without it the cluster is used when a kubeconfig exists, "
        f"else ./{DEFAULT_ROOT}",
    )(func)
    return func


def experiment_root(experiment_file: Path) -> tuple[Path, str]:
    """The local store of an experiment when --root is not given, and why it was chosen.

    `--data-dir` defaults to the experiment file's folder, so the store beside the file counts as much as
    the one in the current directory: whichever of the two exists is used; both existing (and different)
    is ambiguous and refused, since planning against the wrong one would pay again for what exists.
    """
    here = DEFAULT_ROOT
    beside = experiment_file.parent / DEFAULT_ROOT
    found = [p for p in (here, beside) if p.is_dir()]
    if len(found) == 2 and here.resolve() != beside.resolve():
        raise BadInput(
            f"two local stores could be meant: ./{here} (current directory) and {beside} (beside "
            f"{experiment_file}); pass --root to choose one"
        )
    if found and found[0] is beside and here.resolve() != beside.resolve():
        return beside, f"found beside {experiment_file}"
    if found:
        return here, "found in the current directory"
    return here, "new, in the current directory"


def choose_backend(
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    default_root: Path = DEFAULT_ROOT,
) -> Any:
    """The rule: --cluster forces the cluster; --root (or $DATASWEEP_ROOT) means local; otherwise the cluster
    when a kubeconfig exists, else the local root `default_root` (./Data_v2/synthetic)."""
    from datasweep.cli.backends import ClusterBackend, LocalBackend

    if cluster:
        return ClusterBackend.connect(namespace, kube_context)
    if root is not None:
        return LocalBackend(root)
    if namespace is not None or kube_context is not None or kubeconfig_available():
        return ClusterBackend.connect(namespace, kube_context)
    return LocalBackend(default_root)
