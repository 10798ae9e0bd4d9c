"""FOMAML meta-step overhead: one meta-step (1 task, K inner steps + query) vs K+1 plain SFT steps.

Both sides use the same model, the same batch and the same loss; the plain step is forward + backward +
an SGD update. Prints the wall-time ratio (target <= 1.15 on CPU). Run:
    HF_HUB_OFFLINE=1 python bench/bench_fomaml.py [--hidden 256 --layers 4 --seq 128 --batch 4 --k 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from datasweep.api.stages.fomaml import FomamlParams
    from datasweep.testing.tiny import build_tiny_llama
    from datasweep.workloads.fomaml.data import TaskData
    from datasweep.workloads.fomaml.distributed import init_distributed
    from datasweep.workloads.fomaml.modeling import load_model_and_tokenizer
    from datasweep.workloads.fomaml.trainer import MetaTrainer

    torch.set_num_threads(args.threads)
    model_dir = Path(tempfile.mkdtemp()) / "model"
    build_tiny_llama(
        model_dir,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.seq * 2,
    )
    text = " ".join(["the cat answers the question with a span from the context"] * 40)
    # One task whose support and query batches are the same rows: both sides see identical tensors.
    rows = [(text[: args.seq], text[: args.seq * 2]) for _ in range(args.batch)]
    params = FomamlParams(
        num_inner_steps=args.k,
        inner_batch_size=args.batch,
        query_batch_size=args.batch,
        meta_batch_size=1,
        inner_lr=1e-3,
        outer_lr=1e-4,
        max_length=args.seq,
    )
    dist = init_distributed()
    model, tokenizer = load_model_and_tokenizer(str(model_dir), "float32", False, dist.device)
    trainer = MetaTrainer(model, tokenizer, [TaskData("bench", rows, rows)], params, dist)
    batch = trainer.support[0]
    n_params = sum(p.numel() for p in model.parameters())

    def plain_steps() -> None:
        for _ in range(args.k + 1):
            trainer._sgd_step(batch, 1e-3)

    def meta_step() -> None:
        trainer.train_step()

    plain_steps()
    meta_step()  # warm-up (allocates θ and meta-gradient buffers, optimizer state)
    plain_times, meta_times = [], []
    for _ in range(args.repeats):  # interleaved so that machine load hits both sides alike
        start = time.perf_counter()
        plain_steps()
        plain_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        meta_step()
        meta_times.append(time.perf_counter() - start)
    plain, meta = statistics.median(plain_times), statistics.median(meta_times)
    tokens = args.batch * len(batch[0].input_ids) * (args.k + 1)
    print(
        f"model {n_params / 1e6:.2f}M params, batch {args.batch}x{len(batch[0].input_ids)} tokens, K={args.k}, "
        f"threads={args.threads}, device={dist.device}"
    )
    print(f"(K+1) plain fwd/bwd+SGD steps: {plain * 1e3:.1f} ms  ({tokens / plain:.0f} tokens/s)")
    print(f"one FOMAML meta-step:          {meta * 1e3:.1f} ms  ({tokens / meta:.0f} tokens/s)")
    print(f"ratio meta / plain: {meta / plain:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
