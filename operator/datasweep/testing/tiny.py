"""Tiny models and tokenizers built from configs, never downloaded: for tests, benchmarks and demos.

Every builder writes a directory that `from_pretrained` loads, like a real model on the shared volume.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_CORPUS = (
    "The man broke his toe. What was the cause? He dropped a hammer on his foot.",
    "I tipped the bottle, so the liquid in the bottle froze. The paper is about the alias of a title.",
    "Rephrase the sentence while keeping its meaning. Answer the question with a span from the context.",
    "How do I stay safe online? Write a short story about a cat. Explain photosynthesis simply.",
    "0 1 2 3 4 5 6 7 8 9 yes no true false question answer context title alias",
)


def build_bpe_tokenizer(out_dir: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 256) -> Any:
    """A byte-level BPE tokenizer for causal LMs (<pad>, <s>, </s>, <unk>), saved as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_wordpiece_tokenizer(
    out_dir: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400
) -> Any:
    """A lower-casing WordPiece tokenizer for BERT-style encoders ([PAD], [UNK], [CLS], [SEP], [MASK])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(out_dir))
    return fast


def _save_tiny(
    out_dir: str | Path,
    config_class: Any,
    model_class: Any,
    settings: dict[str, Any],
    seed: int,
    overrides: dict[str, Any],
) -> Path:
    """Build `model_class(config_class(**settings, **overrides))` with a fixed seed; save it beside its tokenizer."""
    import torch

    torch.manual_seed(seed)
    model_class(config_class(**{**settings, **overrides})).save_pretrained(str(out_dir))
    return Path(out_dir)


def _causal_lm_ids(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "max_position_embeddings": 256,
    }


def build_tiny_llama(
    out_dir: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS, seed: int = 0, **overrides: Any
) -> Path:
    """A ~35k-parameter Llama with its own tokenizer, saved to `out_dir`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_bpe_tokenizer(out_dir, corpus)
    settings = {
        **_causal_lm_ids(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
    }
    return _save_tiny(out_dir, LlamaConfig, LlamaForCausalLM, settings, seed, overrides)


def build_tiny_olmoe(
    out_dir: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS, seed: int = 0, **overrides: Any
) -> Path:
    """A tiny OLMoE (mixture of experts: 8 experts, top-2) with its own tokenizer, saved to `out_dir`."""
    from transformers import OlmoeConfig, OlmoeForCausalLM

    tokenizer = build_bpe_tokenizer(out_dir, corpus)
    settings = {
        **_causal_lm_ids(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    }
    return _save_tiny(out_dir, OlmoeConfig, OlmoeForCausalLM, settings, seed, overrides)


def build_tiny_bert(
    out_dir: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS, seed: int = 0, **overrides: Any
) -> Path:
    """A tiny BERT encoder with a WordPiece tokenizer (for extractive QA), saved to `out_dir`."""
    from transformers import BertConfig, BertForQuestionAnswering

    tokenizer = build_wordpiece_tokenizer(out_dir, corpus)
    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return _save_tiny(out_dir, BertConfig, BertForQuestionAnswering, settings, seed, overrides)


# The chain tests' small BERT: a QA epoch on a few dozen records in seconds on one CPU core.
SMALL_BERT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
}


def build_for_kind(kind: str, out_dir: str | Path, corpus: Iterable[str] = DEFAULT_CORPUS) -> Path:
    """The tiny base model a training kind runs on: fomaml a Llama, moe-steer an OLMoE, qa a small BERT."""
    if kind == "fomaml":
        return build_tiny_llama(out_dir, corpus)
    if kind == "moe-steer":
        return build_tiny_olmoe(out_dir, corpus)
    if kind == "qa":
        return build_tiny_bert(out_dir, corpus, **SMALL_BERT)
    raise ValueError(f"no tiny model for training kind {kind!r}")
