"""YAML read as kubectl reads it: the one loader for every file a user writes.

`kubectl apply`, Helm, Argo CD and Flux turn YAML into JSON with sigs.k8s.io/yaml, whose resolver is
go-yaml v2's (checked against sigs.k8s.io/yaml v1.6.0's YAMLToJSON): `1e-5` is a float (PyYAML's YAML 1.1
reads a string), `yes`/`no`/`on`/`off`/`y`/`n` are booleans, `012` is octal (10), `0o17`, `0x1F` and `0b101`
are numbers, `1_000` is 1000, and `2024-12-29` stays a string. Experiment files, params files, worker specs
and the operator's config are read with `load` / `load_all`, so a file means the same locally and on the
cluster. `dump` quotes every string that kubectl or a YAML 1.1 or 1.2 reader would read as something else,
so what it writes reads back the same with any of them.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml

YAMLError = yaml.YAMLError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_TRUE = ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")
_FALSE = ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")
_INT = re.compile(r"^[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|0[0-7_]*|[1-9][0-9_]*)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9_]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
# go-yaml v2's implicit types: tag, pattern, the first characters it can start with ("" for the empty scalar).
# Order matters: the first match wins (`09` is not octal, so it is the float 9.0, as in go-yaml).
_KUBE_SCHEMA: list[tuple[str, re.Pattern[str], list[str]]] = [
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", re.compile(f"^(?:{'|'.join(_TRUE + _FALSE)})$"), list("yYnNtTfFoO")),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789.")),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"]),
]


class Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader with the implicit types kubectl's YAML reader (go-yaml v2) gives plain scalars."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {}  # only kubectl's

    def construct_kube_bool(self, node: yaml.Node) -> bool:
        return str(self.construct_scalar(node)) in _TRUE  # type: ignore[arg-type]

    def construct_kube_int(self, node: yaml.Node) -> int:
        value = str(self.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
        sign = -1 if value.startswith("-") else 1
        digits = value.lstrip("+-")
        for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
            if digits.startswith(prefix):
                return sign * int(digits[2:], base)
        if len(digits) > 1 and digits.startswith("0"):
            return sign * int(digits, 8)  # `012` is ten, as Go's strconv.ParseInt(s, 0, 64) reads it
        return sign * int(digits, 10)


Loader.add_constructor("tag:yaml.org,2002:bool", Loader.construct_kube_bool)
Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_kube_int)
for _tag, _regexp, _first in _KUBE_SCHEMA:
    Loader.add_implicit_resolver(_tag, _regexp, _first)

# YAML 1.2's core schema, for `dump`: a string one of these readers would take for a number stays quoted.
_CORE_SCHEMA: list[tuple[str, re.Pattern[str], list[str]]] = [
    ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
]


class Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """A safe dumper that quotes a string whenever kubectl, YAML 1.1 or YAML 1.2 would read it as another type."""


for _tag, _regexp, _first in _KUBE_SCHEMA + _CORE_SCHEMA:
    Dumper.add_implicit_resolver(_tag, _regexp, _first)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=Loader))


def dump(data: Any, **options: Any) -> str:
    return str(yaml.dump(data, Dumper=Dumper, **options))
