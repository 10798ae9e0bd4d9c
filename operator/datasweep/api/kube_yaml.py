"""YAML read as kubectl reads it: the YAML 1.2 core schema, the one loader for every file a user writes.

PyYAML follows YAML 1.1, where `1e-5` is a string, `on`/`yes`/`no` are booleans, `012` is octal and
`2024-01-01` a date; `kubectl apply` of the same file (YAML 1.2 rules) gives a float, strings, 12 and a
string. Experiment files, params files, worker specs and the operator's config are read with `load` /
`load_all` so a file means the same locally and on the cluster. `dump` quotes every string that either rule
set would read as something else, so what it writes reads back the same with this loader or any other.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml

YAMLError = yaml.YAMLError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), plus merge keys (`<<`), which
# kubectl also accepts.
# Each entry: tag, pattern, the first characters it can start with ("" for the empty scalar, `key:`).
_CORE_SCHEMA: list[tuple[str, re.Pattern[str], list[str]]] = [
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    ),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"]),
]


class Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader with the YAML 1.2 core schema's implicit types."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {}  # only the core schema

    def construct_yaml_int(self, node: yaml.Node) -> int:
        value = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0x"):
            return int(value[2:], 16)
        return int(value, 10)  # `012` is twelve, not octal


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
for _tag, _regexp, _first in _CORE_SCHEMA:
    Loader.add_implicit_resolver(_tag, _regexp, _first)


class Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """A safe dumper that quotes a string whenever YAML 1.1 or 1.2 would read it as another type."""


for _tag, _regexp, _first in _CORE_SCHEMA:
    Dumper.add_implicit_resolver(_tag, _regexp, _first)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=Loader))


def dump(data: Any, **options: Any) -> str:
    return str(yaml.dump(data, Dumper=Dumper, **options))
