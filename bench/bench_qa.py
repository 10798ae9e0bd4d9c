"""QA training step vs a plain forward/backward of the same model and batch (target ratio <= 1.05).

The training step is `QaTrainer.training_step`: forward, the seed 002 loss (label smoothing, short-field
weight and boost, null-margin hinge over every valid span), backward, gradient clipping, AdamW and the
scheduler. The plain step is forward with the model's built-in QA loss, backward and the same AdamW step.
Both run on the same model and the same padded batch, interleaved, and the medians are compared.

    python bench/bench_qa.py [--hidden 256 --layers 4 --seq 256 --batch 8 --rounds 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from datasweep.api.stages.qa import QaParams
    from datasweep.testing.tiny import build_tiny_bert
    from datasweep.workloads.qa.data import QaRecord
    from datasweep.workloads.qa.modeling import Collator, FeatureDataset
    from datasweep.workloads.qa.training import QaTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    words = [
        "the",
        "archive",
        "in",
        "paris",
        "lists",
        "kalo",
        "who",
        "is",
        "also",
        "known",
        "as",
        "renvel",
        "few",
        "people",
        "remember",
        "this",
    ]
    context = " ".join(words[i % len(words)] for i in range(args.seq * 2))
    answer_at = context.index("renvel")
    records = [
        QaRecord(f"q{i}", "What is kalo also known as?", context, ("renvel",), (answer_at,)) for i in range(8)
    ] + [QaRecord(f"n{i}", "What is bern also known as?", context) for i in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_bert(
            Path(tmp) / "model",
            corpus=[context, "What is kalo also known as?"],
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 64),
            max_position_embeddings=max(512, args.seq),
        )
        params = QaParams(
            per_device_batch_size=args.batch,
            grad_accum_steps=1,
            max_length=args.seq,
            doc_stride=args.seq // 4,
            num_workers=0,
        )
        trainer = QaTrainer(params, model_dir, Path(tmp) / "run", records, records[:2])
        dataset = FeatureDataset(trainer.train_features)
        batch = Collator(trainer.pad_token_id)([dataset[i % len(dataset)] for i in range(args.batch)])
        batch = {k: v.to(trainer.device) for k, v in batch.items()}
        model = trainer.model
        model.train()
        plain_optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

        def plain_step() -> None:
            loss = model(**inputs, start_positions=batch["start_positions"], end_positions=batch["end_positions"]).loss
            loss.backward()
            plain_optimizer.step()
            plain_optimizer.zero_grad(set_to_none=True)

        def qa_step() -> None:
            trainer.training_step(batch, apply=True)

        def timed(step: object) -> float:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            begin = time.perf_counter()
            step()  # type: ignore[operator]
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - begin

        for _ in range(2):  # warm-up
            plain_step()
            qa_step()
        plain, ours = [], []
        for round_index in range(args.rounds):
            order = (plain_step, qa_step) if round_index % 2 == 0 else (qa_step, plain_step)
            for step in order:
                (plain if step is plain_step else ours).append(timed(step))
        plain_median, ours_median = statistics.median(plain), statistics.median(ours)
        ratio = ours_median / plain_median
        print(
            f"qa bench: device {trainer.device}, hidden {args.hidden}, layers {args.layers}, "
            f"batch {args.batch} x seq {batch['input_ids'].shape[1]}, {args.rounds} rounds"
        )
        print(f"plain forward/backward + AdamW: {plain_median * 1000:.1f} ms (median)")
        print(f"qa training step (seed 002 loss, clip, scheduler): {ours_median * 1000:.1f} ms (median)")
        print(f"ratio {ratio:.3f} (target <= 1.05): {'OK' if ratio <= 1.05 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
