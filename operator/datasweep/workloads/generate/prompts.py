"""Prompt templates with named fields (str.format style) and the verdict parser of the validation step."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping

from datasweep.workloads.generate.inputs import GenerateInputError

KEEP_WORDS = frozenset({"keep", "kept", "accept", "accepted", "yes", "valid", "pass", "good"})
REJECT_WORDS = frozenset({"reject", "rejected", "no", "invalid", "fail", "bad", "discard"})


class PromptTemplate:
    """`Rephrase: {text}`: named fields only; literal braces are doubled (`{{`)."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        fields: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise GenerateInputError(
                f"{name}: not a valid template ({exc}); write literal braces as {{{{ and }}}}"
            ) from exc
        for _, field_name, _, _ in parsed:
            if field_name is None:
                continue
            base = field_name.split(".", 1)[0].split("[", 1)[0]
            if not base or base.isdigit():
                raise GenerateInputError(
                    f"{name}: positional field {{{field_name}}} is not allowed; name it, e.g. {{text}}"
                )
            fields.add(base)
        self.fields = frozenset(fields)

    def missing(self, available: Mapping[str, object] | frozenset[str] | set[str]) -> list[str]:
        keys = set(available)
        return sorted(self.fields - keys)

    def render(self, values: Mapping[str, object]) -> str:
        missing = self.missing(values)
        if missing:
            raise GenerateInputError(
                f"{self.name}: template field(s) {', '.join(missing)} not available; "
                f"available: {', '.join(sorted(values))}"
            )
        shown = {
            key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            for key, value in values.items()
        }
        return self.text.format_map(shown)


def parse_verdict(text: str) -> tuple[str, str]:
    """('keep' | 'reject', reason) from a judge's answer: `KEEP: reason`, `REJECT\\nreason` or JSON."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            raw = str(value.get("verdict", value.get("decision", ""))).strip().lower()
            reason = str(value.get("reason", "")).strip()
            if raw in KEEP_WORDS:
                return "keep", reason
            if raw in REJECT_WORDS:
                return "reject", reason
    head, _, rest = stripped.partition("\n")
    first_word = head.strip().split(maxsplit=1)[0] if head.strip() else ""
    word = first_word.strip("*:.,-!\"'`[]()").lower()
    inline_reason = head.strip()[len(first_word) :].strip(" :-—.")
    reason = " ".join(part for part in (inline_reason, rest.strip()) if part)
    if word in KEEP_WORDS:
        return "keep", reason
    if word in REJECT_WORDS:
        return "reject", reason
    return "reject", f"unparseable verdict: {stripped[:120]!r}"
