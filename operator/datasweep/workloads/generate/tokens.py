"""Token counts of chat requests with the model's own tokenizer, for `plan`'s cost bound.

A local model (the transformers backend) is counted with its own tokenizer and chat template.

tiktoken knows the OpenAI models' encodings (gpt-4o: o200k_base, gpt-4: cl100k_base, ...), but it downloads
an encoding's file the first time (then caches it under $TIKTOKEN_CACHE_DIR, or the temp dir). Without the
package, for a model it does not know, or when the file cannot be fetched (no network, nothing cached), the
count falls back to 4 bytes per token, and the counter says so: that is an estimate, not a bound.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BYTES_PER_TOKEN = 4  # a rough rule for English text
# The chat format's framing, as OpenAI counts it: a few tokens per message, and 3 priming the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
LOAD_TIMEOUT_S = 20.0
LOCAL_TOKENIZER = "the tokenizer of "  # how a local model's counts are named


Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class TokenCounter:
    encode_len: Callable[[str], int]
    method: str  # how the counts are made, for people: "tiktoken o200k_base" or "4 bytes per token (...)"
    exact: bool  # the model's tokenizer (True) or the bytes rule (False)
    chat_len: Callable[[Messages], int] | None = None  # a local model's chat template, when it has its own

    def count(self, text: str) -> int:
        return self.encode_len(text)

    def chat(self, messages: Messages) -> int:
        """Prompt tokens of a chat request."""
        if self.chat_len is not None:
            return self.chat_len(messages)
        contents = [str(message.get("content") or "") for message in messages]
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


@functools.cache
def counter_for_directory(directory: str) -> TokenCounter:
    """A local model's own tokenizer, counting a prompt as the transformers backend sends it (its chat template)."""
    from datasweep.workloads.generate.backends import TransformersBackend

    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:  # no transformers, no tokenizer files, a broken directory
        return bytes_counter(f"the tokenizer of {directory} cannot be loaded ({type(exc).__name__})")

    def encode_len(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_len(messages: Messages) -> int:
        text = TransformersBackend._prompt_text(tokenizer, [dict(message) for message in messages])
        return encode_len(text)

    return TokenCounter(encode_len, f"{LOCAL_TOKENIZER}{directory}", exact=True, chat_len=chat_len)
