"""Stage parameters for a worker CLI: a YAML/JSON params file, then `KEY=VALUE` overrides (YAML as kubectl reads it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasweep.api import kube_yaml


class ParamsFileError(ValueError):
    """A params file or a KEY=VALUE override that cannot be read; the message names the file or option."""


def load_params_mapping(
    params_file: str | Path | None,
    overrides: Iterable[str] = (),
    option_name: str = "--set",
    example: str = "name=value",
) -> dict[str, Any]:
    """The params file's mapping (if any) updated by each `KEY=VALUE` override, whose value is parsed as YAML.

    `option_name` and `example` (e.g. "inner_lr=1e-4") are the flag and a sample setting for the messages.
    """
    raw: dict[str, Any] = {}
    if params_file is not None:
        source = Path(params_file)
        try:
            loaded = kube_yaml.load(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ParamsFileError(f"{source}: params file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ParamsFileError(f"{source}: cannot read params file: {exc}") from exc
        except kube_yaml.YAMLError as exc:
            raise ParamsFileError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            sample = example.replace("=", ": ", 1)
            raise ParamsFileError(f"{source}: a params file is a mapping of name: value (e.g. {sample})")
        raw.update(loaded or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsFileError(f"{option_name} {item!r}: expected KEY=VALUE, e.g. {option_name} {example}")
        try:
            raw[key.strip()] = kube_yaml.load(value)
        except kube_yaml.YAMLError as exc:
            raise ParamsFileError(f"{option_name} {item!r}: the value is not valid YAML: {exc}") from exc
    return raw
