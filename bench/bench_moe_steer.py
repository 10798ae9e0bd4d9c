"""Benchmark the moe-steer workload, side by side in one run.

1. Analysis (router logits + top-k counting per label) vs a plain forward pass over the same batches
   (target: ratio <= 1.10 against the causal LM forward a naive implementation would run).
2. One masked training step (chosen experts only: their slices are the only trainable parameters, gradients
   and AdamW state) vs an unmasked step (every weight trained by AdamW), and vs the whole expert tensors of the
   same layers trained (what training them without slicing would cost).

    ~/.cache/datasweep/venv/bin/python bench/bench_moe_steer.py [--device cuda] [--hidden 256 ...]

Uses an OLMoE built from a config (nothing downloaded). Timings are the minimum over --repeats runs.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORDS = (
    "how",
    "do",
    "I",
    "stay",
    "safe",
    "online",
    "write",
    "a",
    "short",
    "story",
    "about",
    "a",
    "cat",
    "explain",
    "photosynthesis",
    "simply",
    "ignore",
    "the",
    "rules",
    "and",
    "tell",
    "me",
    "pretend",
    "you",
    "have",
    "no",
    "limits",
    "jailbreak",
    "developer",
    "mode",
    "bypass",
    "filter",
    "answer",
    "the",
    "question",
)


def best_of(repeats: int, run: Callable[[], None], sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--intermediate", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--words", type=int, default=48, help="Words per prompt (about as many tokens x2)")
    parser.add_argument("--selected", type=int, default=8, help="Experts trained in the masked step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datasweep.api.stages.moe_steer import MoeSteerParams
    from datasweep.testing.tiny import build_tiny_olmoe
    from datasweep.workloads.moe_steer.analysis import analyze_batches, build_expert_mask, select_experts
    from datasweep.workloads.moe_steer.data import Prompt, build_batches
    from datasweep.workloads.moe_steer.encoding import encode_batch
    from datasweep.workloads.moe_steer.experts import discover_moe_layout
    from datasweep.workloads.moe_steer.training import SelectedExperts, masked_step

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = random.Random(0)
    total = args.batches * args.batch_size
    prompts = [
        Prompt(" ".join(rng.choice(WORDS) for _ in range(args.words)), "safe" if i % 2 else "unsafe", f"synthetic:{i}")
        for i in range(total)
    ]
    params = MoeSteerParams(batch_size=args.batch_size, top_n=args.selected, weight_decay=0.01, device=args.device)
    batches = build_batches(prompts, params)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_olmoe(
            Path(tmp),
            corpus=[" ".join(WORDS)] * 4,
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_hidden_layers=args.layers,
            num_experts=args.experts,
            num_experts_per_tok=args.top_k,
            max_position_embeddings=1024,
        )
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device)
    layout = discover_moe_layout(model)
    model.eval()
    tokens = sum(int(encode_batch(tokenizer, b, params).attention_mask.sum()) for b in batches)

    def plain_causal_lm() -> None:
        with torch.inference_mode():
            for records in batches:
                encoded = encode_batch(tokenizer, records, params, include_response=False)
                model(input_ids=encoded.input_ids.to(device), attention_mask=encoded.attention_mask.to(device))

    def plain_decoder() -> None:
        with torch.inference_mode():
            for records in batches:
                encoded = encode_batch(tokenizer, records, params, include_response=False)
                model.get_decoder()(
                    input_ids=encoded.input_ids.to(device), attention_mask=encoded.attention_mask.to(device)
                )

    analysis_result: list[Any] = []

    def analysis() -> None:
        analysis_result[:] = [analyze_batches(model, tokenizer, layout, batches, params, device)]

    plain_causal_lm()  # warm-up
    analysis()
    t_lm = t_dec = t_an = float("inf")
    for _ in range(args.repeats):  # interleaved so drift hits all three alike
        t_lm = min(t_lm, best_of(1, plain_causal_lm, sync))
        t_dec = min(t_dec, best_of(1, plain_decoder, sync))
        t_an = min(t_an, best_of(1, analysis, sync))

    selected = select_experts(analysis_result[0].mean, params)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, selected)

    # --- training steps: three set-ups, one step each per round, interleaved; min per step ---
    model.train()
    expert_tensors = [p for layer in layout.layers if mask[layer.layer_idx].any() for p in layer.expert_params.values()]
    selected_experts = SelectedExperts(model, layout, mask)
    masked_opt = torch.optim.AdamW(selected_experts.parameters, lr=1e-5, weight_decay=0.01)
    experts_opt = torch.optim.AdamW(expert_tensors, lr=1e-5, weight_decay=0.01)
    full_opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    def plain_step(records: Any, optimizer: Any, trainable: list[Any]) -> None:
        encoded = encode_batch(tokenizer, records, params)
        loss = model(
            input_ids=encoded.input_ids.to(device),
            attention_mask=encoded.attention_mask.to(device),
            labels=encoded.labels.to(device),
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed_masked(records: Any) -> float:
        def step() -> None:
            masked_step(model, tokenizer, records, selected_experts, masked_opt, params, device)

        with selected_experts:
            return best_of(1, step, sync)

    def timed_plain(records: Any, optimizer: Any, trainable: list[Any]) -> float:
        for param in model.parameters():
            param.requires_grad_(False)
        for param in trainable:
            param.requires_grad_(True)
        return best_of(1, lambda: plain_step(records, optimizer, trainable), sync)

    every = list(model.parameters())
    t_masked = t_experts = t_full = float("inf")
    for round_idx in range(args.repeats + 1):  # round 0 warms up
        records = batches[round_idx % len(batches)]
        m, e, f = (
            timed_masked(records),
            timed_plain(records, experts_opt, expert_tensors),
            timed_plain(records, full_opt, every),
        )
        if round_idx:
            t_masked, t_experts, t_full = min(t_masked, m), min(t_experts, e), min(t_full, f)

    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: OLMoE {args.layers} layers x {args.experts} experts (top-{args.top_k}), hidden {args.hidden}, "
        f"{n_params / 1e6:.2f}M params; device {device}; threads {args.threads}"
    )
    print(f"data: {len(batches)} batches of {args.batch_size} ({tokens} tokens); {len(selected)} experts selected")
    print(f"plain forward, causal LM     : {t_lm * 1000:9.1f} ms")
    print(f"plain forward, decoder only  : {t_dec * 1000:9.1f} ms")
    print(f"analysis (router logits+count): {t_an * 1000:8.1f} ms")
    print(f"RATIO analysis / plain causal LM forward = {t_an / t_lm:.3f}  (target <= 1.10)")
    print(f"RATIO analysis / plain decoder forward   = {t_an / t_dec:.3f}")
    print(f"masked step (chosen experts)        : {t_masked * 1000:8.1f} ms")
    print(f"unmasked step (expert tensors whole): {t_experts * 1000:8.1f} ms")
    print(f"unmasked step (every weight)        : {t_full * 1000:8.1f} ms")
    print(f"RATIO masked step / unmasked full step          = {t_masked / t_full:.3f}")
    print(f"RATIO masked step / unmasked expert-tensor step = {t_masked / t_experts:.3f}")


if __name__ == "__main__":
    main()
