"""Cost estimates: USD per million tokens by model, overridable by `params.prices`.

Public list prices (standard tier) at the time of writing; the Batch API bills half of them.
A model that matches no entry costs 0 and is reported as unpriced.
"""

from __future__ import annotations

from collections.abc import Mapping

from datasweep.api.stages.generate import PriceEntry

BATCH_DISCOUNT = 0.5

DEFAULT_PRICES: dict[str, PriceEntry] = {
    name: PriceEntry(input_per_million=prompt, output_per_million=completion)
    for name, prompt, completion in (
        ("gpt-4o", 2.50, 10.00),
        ("gpt-4o-mini", 0.15, 0.60),
        ("gpt-4.1", 2.00, 8.00),
        ("gpt-4.1-mini", 0.40, 1.60),
        ("gpt-4.1-nano", 0.10, 0.40),
        ("gpt-4-turbo", 10.00, 30.00),
        ("gpt-4", 30.00, 60.00),
        ("gpt-3.5-turbo", 0.50, 1.50),
        ("o1", 15.00, 60.00),
        ("o3-mini", 1.10, 4.40),
        ("o4-mini", 1.10, 4.40),
    )
}


def price_for(model: str, table: Mapping[str, PriceEntry]) -> PriceEntry | None:
    """Exact name first, then the longest known prefix (`gpt-4o-2024-08-06` -> `gpt-4o`)."""
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name + "-")]
    return table[max(prefixes, key=len)] if prefixes else None


def price_table(backend: str, overrides: Mapping[str, PriceEntry]) -> dict[str, PriceEntry]:
    """Self-hosted backends only cost what the user priced them at."""
    base = dict(DEFAULT_PRICES) if backend in ("openai", "openai-batch") else {}
    base.update(overrides)
    return base


def estimate_cost(
    model: str, prompt_tokens: int, completion_tokens: int, table: Mapping[str, PriceEntry], batch: bool
) -> float | None:
    price = price_for(model, table)
    if price is None:
        return None
    cost = (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / 1e6
    return round(cost * (BATCH_DISCOUNT if batch else 1.0), 6)
