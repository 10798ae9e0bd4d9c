"""Token counts of chat requests with the model's own tokenizer, for `plan`'s cost bound.

tiktoken knows the OpenAI models' encodings (gpt-4o: o200k_base, gpt-4: cl100k_base, ...), but it downloads
an encoding's file the first time (then caches it under $TIKTOKEN_CACHE_DIR, or the temp dir). Without the
package, for a model it does not know, or when the file cannot be fetched (no network, nothing cached), the
count falls back to 4 bytes per token, and the counter says so: that is an estimate, not a bound.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

BYTES_PER_TOKEN = 4  # a rough rule for English text
# The chat format's framing, as OpenAI counts it: a few tokens per message, and 3 priming the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
LOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class TokenCounter:
    encode_len: Callable[[str], int]
    method: str  # how the counts are made, for people: "tiktoken o200k_base" or "4 bytes per token (...)"
    exact: bool  # the model's tokenizer (True) or the bytes rule (False)

    def count(self, text: str) -> int:
        return self.encode_len(text)

    def chat(self, contents: Sequence[str]) -> int:
        """Prompt tokens of a chat request whose messages have these contents."""
        return sum(self.count(text) + TOKENS_PER_MESSAGE for text in contents) + TOKENS_PER_REPLY


def _bytes_rule(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def bytes_counter(reason: str) -> TokenCounter:
    return TokenCounter(_bytes_rule, f"{BYTES_PER_TOKEN} bytes per token, an estimate: {reason}", exact=False)


@functools.cache
def _encoding(name: str) -> Any:
    """tiktoken's encoding `name`, or the reason it cannot be had (a str); asked once per process."""
    import tiktoken

    loaded: list[Any] = []

    def load() -> None:
        try:
            loaded.append(tiktoken.get_encoding(name))
        except Exception as exc:  # requests' and OS errors alike: the file could not be had
            loaded.append(exc)

    # tiktoken fetches without a timeout: a network that drops packets must not hang `plan`
    thread = threading.Thread(target=load, name="tiktoken-load", daemon=True)
    thread.start()
    thread.join(LOAD_TIMEOUT_S)
    if not loaded:
        return f"fetching tiktoken's {name} file got no answer in {LOAD_TIMEOUT_S:g} s"
    if isinstance(loaded[0], BaseException):
        return (
            f"tiktoken could not fetch its {name} file ({type(loaded[0]).__name__}); "
            "put it in $TIKTOKEN_CACHE_DIR for offline counts"
        )
    return loaded[0]


@functools.cache
def counter_for(model: str) -> TokenCounter:
    """The model's tiktoken encoding when tiktoken knows the model and has (or can fetch) its file."""
    try:
        import tiktoken
    except ImportError:
        return bytes_counter("tiktoken is not installed (pip install 'datasweep[tokens]')")
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return bytes_counter(f"tiktoken does not know the model {model!r}")
    encoding = _encoding(name)
    if isinstance(encoding, str):
        return bytes_counter(encoding)

    def encode_len(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return TokenCounter(encode_len, f"tiktoken {name}", exact=True)
