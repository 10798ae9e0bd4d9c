"""Prompt templates with named fields (str.format style) and the verdict parser of the validation step."""

from __future__ import annotations

import json

from datasweep.core.templates import PromptTemplate as PromptTemplate  # the plan-time check renders with it too

KEEP_WORDS = frozenset({"keep", "kept", "accept", "accepted", "yes", "valid", "pass", "good"})
REJECT_WORDS = frozenset({"reject", "rejected", "no", "invalid", "fail", "bad", "discard"})


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
