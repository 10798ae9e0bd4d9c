"""The GPU check: real-size, randomly initialised models from the real configs (nothing downloaded), per training
kind, on one GPU. For each kind it measures the workload's step against a plain PyTorch/transformers loop doing
the same work, tokens per second, and the peak memory (torch.cuda.max_memory_allocated) against plan's estimate
(datasweep.core.memory, the same code plan and the operator run):

- fomaml (Llama-3.2-1B): one meta-step (MetaTrainer.train_step: 1 task, K inner SGD steps + the query
  gradient + AdamW) vs K+1 plain steps (forward with labels, backward, SGD): target <= 1.15.
- moe-steer (OLMoE-1B-7B, top_n experts): train_experts' step vs a plain step of the same batch (forward,
  backward, AdamW over the expert tensors): target <= 1.05.
- qa (roberta-large): the qa step (the seed 002 loss under bfloat16 autocast, clipping, AdamW) vs a plain step
  (the model's own start/end loss, same autocast, AdamW): target <= 1.05.
- memory: peak / estimate, target within 15% (0.85 .. 1.15).

    ~/.cache/datasweep/venv/bin/python bench/bench_gpu.py            # one GPU (sized for an H100; not yet run on one)
    ~/.cache/datasweep/venv/bin/python bench/bench_gpu.py --dry      # CPU, tiny configs (the test suite)

With --dry the models are the tiny configs of the same architectures on the CPU and there is no peak memory to
compare (it prints n/a): it proves the script runs and prints its ratios, not the targets.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEXT = " ".join(["the cat answers the question with a span from the context, then explains why"] * 200)


def timed(step: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def compare(
    name: str, work: Callable[[], Any], plain: Callable[[], Any], repeats: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """Median seconds of the workload's step and of the plain one, interleaved so drift hits both alike."""
    work()
    plain()  # warm-up: allocator, kernels, optimizer state
    works, plains = [], []
    for _ in range(repeats):
        works.append(timed(work, sync))
        plains.append(timed(plain, sync))
    return statistics.median(works), statistics.median(plains)


class Gpu:
    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.cuda else None

    def release(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def report(kind: str, model: str, work: float, plain: float, plain_label: str, target: float, tokens: int) -> None:
    print(f"{kind} on {model}: workload step {work * 1e3:.1f} ms ({tokens / work:,.0f} tokens/s); {plain_label} "
          f"{plain * 1e3:.1f} ms ({tokens / plain:,.0f} tokens/s)")  # fmt: skip
    print(f"RATIO {kind} step / {plain_label} = {work / plain:.3f}  (target <= {target})")


def size(value: int) -> str:
    return f"{value / 1024**3:.2f} GiB" if value >= 1024**3 else f"{value / 1024**2:.2f} MiB"


def report_memory(kind: str, peak: int | None, estimate: Any) -> None:
    terms = ", ".join(
        f"{name} {size(value)}"
        for name, value in (
            ("weights", estimate.weights),
            ("gradients", estimate.gradients),
            ("optimizer", estimate.optimizer),
            ("extra", estimate.extra),
            (f"activations of {estimate.tokens} tokens", estimate.activations),
        )
    )
    if peak is None:
        print(f"{kind} memory: plan's estimate {size(estimate.total)} ({terms}); peak n/a on the CPU")
        return
    print(f"{kind} memory: peak {size(peak)}, plan's estimate {size(estimate.total)} ({terms})")
    print(f"RATIO {kind} peak / estimate = {peak / estimate.total:.3f}  (target 0.85 .. 1.15)")


def tokenizer_in(directory: Path) -> Any:
    from datasweep.testing.tiny import build_bpe_tokenizer

    return build_bpe_tokenizer(directory, [TEXT])


def bench_fomaml(args: argparse.Namespace, gpu: Gpu, config: dict[str, Any], tmp: Path) -> None:
    import torch

    from datasweep.api.stages.fomaml import FomamlParams
    from datasweep.core.memory import estimate_memory, gpu_for, model_shape
    from datasweep.workloads.fomaml.data import TaskData
    from datasweep.workloads.fomaml.distributed import DistContext
    from datasweep.workloads.fomaml.modeling import collate
    from datasweep.workloads.fomaml.trainer import MetaTrainer
    from datasweep.workloads.meta_model import build

    params = FomamlParams(
        num_inner_steps=args.k,
        inner_batch_size=args.batch,
        query_batch_size=args.batch,
        meta_batch_size=1,
        inner_lr=1e-5,
        outer_lr=1e-5,
        max_length=args.seq,
        dtype=args.dtype,
    )
    tokenizer = tokenizer_in(tmp / "fomaml")
    model = build(config, device=str(gpu.device), dtype=getattr(torch, args.dtype))
    model.config.pad_token_id = tokenizer.pad_token_id
    prompt, response = TEXT[: args.seq // 4], TEXT[: args.seq * 8]  # a byte-level tokenizer: ~1 token per char
    rows = [(prompt, response) for _ in range(args.batch)]  # the response is cut at max_length tokens
    dist = DistContext(rank=0, world_size=1, local_rank=0, device=gpu.device)
    gpu.reset_peak()
    trainer = MetaTrainer(model, tokenizer, [TaskData("bench", rows, rows)], params, dist)
    batch = collate(trainer.support[0], trainer.pad_id, gpu.device)

    def plain_steps() -> None:  # K+1 plain SGD steps: forward with labels, backward, update
        for _ in range(args.k + 1):
            model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-1e-5)
                    p.grad = None

    work, plain = compare("fomaml", trainer.train_step, plain_steps, args.repeats, gpu.sync)
    tokens = args.batch * batch["input_ids"].shape[1] * (args.k + 1)
    report("fomaml", args.fomaml_model, work, plain, f"{args.k + 1} plain steps", 1.15, tokens)
    shape = model_shape(config)
    estimate = estimate_memory("fomaml", params.model_dump(mode="json"), 1, 1, shape, gpu_for(None, None))
    report_memory("fomaml", gpu.peak(), estimate)


def bench_moe_steer(args: argparse.Namespace, gpu: Gpu, config: dict[str, Any], tmp: Path) -> None:
    import numpy as np
    import torch

    from datasweep.api.stages.moe_steer import MoeSteerParams
    from datasweep.core.memory import estimate_memory, gpu_for, model_shape
    from datasweep.workloads.meta_model import build
    from datasweep.workloads.moe_steer.data import Prompt, build_batches
    from datasweep.workloads.moe_steer.encoding import encode_batch
    from datasweep.workloads.moe_steer.experts import discover_moe_layout
    from datasweep.workloads.moe_steer.training import train_experts

    params = MoeSteerParams(
        batch_size=args.batch * 2,
        top_n=args.top_n,
        max_length=args.seq,
        torch_dtype=args.dtype,
        device="cuda" if gpu.cuda else "cpu",
        max_steps=1,
        num_epochs=1,
    )
    tokenizer = tokenizer_in(tmp / "moe")
    model = build(config, device=str(gpu.device), dtype=getattr(torch, args.dtype))
    layout = discover_moe_layout(model)
    mask = np.zeros((layout.num_layers, layout.num_experts), dtype=np.bool_)
    for n in range(min(args.top_n, len(layout.layers) * layout.num_experts)):  # spread over the layers
        mask[layout.moe_layers[n % len(layout.layers)], (n // len(layout.layers)) % layout.num_experts] = True
    prompts = [
        Prompt(TEXT[: args.seq * 4], "safe" if i % 2 else "unsafe", f"bench:{i}") for i in range(params.batch_size)
    ]
    batches = build_batches(prompts, params)
    experts = [p for layer in layout.layers if mask[layer.layer_idx].any() for p in layer.expert_params.values()]
    plain_optimizer = torch.optim.AdamW(experts, lr=1e-5)
    encoded = encode_batch(tokenizer, batches[0], params)
    inputs = {
        "input_ids": encoded.input_ids.to(gpu.device),
        "attention_mask": encoded.attention_mask.to(gpu.device),
        "labels": encoded.labels.to(gpu.device),
    }
    model.train()

    def plain_step() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in experts:
            p.requires_grad_(True)
        model(**inputs).loss.backward()
        torch.nn.utils.clip_grad_norm_(experts, 1.0)
        plain_optimizer.step()
        plain_optimizer.zero_grad(set_to_none=True)

    def workload_step() -> None:  # one optimizer step of the workload's own loop (max_steps=1)
        train_experts(model, tokenizer, layout, batches[:1], mask, params, gpu.device)

    plain_step()
    for p in experts:
        p.grad = None
    plain_optimizer.state.clear()  # the workload's own optimizer state only, in the peak below
    gpu.reset_peak()
    workload_step()
    peak = gpu.peak()
    work, plain = compare("moe-steer", workload_step, plain_step, args.repeats, gpu.sync)
    report("moe-steer", args.moe_model, work, plain, "a plain step", 1.05, int(encoded.input_ids.numel()))
    shape = model_shape(config)
    estimate = estimate_memory("moe-steer", params.model_dump(mode="json"), 1, 1, shape, gpu_for(None, None))
    report_memory("moe-steer", peak, estimate)


def bench_qa(args: argparse.Namespace, gpu: Gpu, config: dict[str, Any]) -> None:
    import torch

    from datasweep.api.stages.qa import QaParams
    from datasweep.core.memory import estimate_memory, gpu_for, model_shape
    from datasweep.workloads.meta_model import build
    from datasweep.workloads.qa.modeling import autocast_for, compute_loss
    from datasweep.workloads.qa.training import loss_weights

    seq = min(args.seq, int(config["max_position_embeddings"]) - 2)
    params = QaParams(per_device_batch_size=args.batch * 2, max_length=seq, doc_stride=min(128, seq // 2))
    rows = params.per_device_batch_size
    model = build(config, device=str(gpu.device))
    generator = torch.Generator().manual_seed(0)
    context = torch.arange(seq) >= seq // 4
    batch = {
        "input_ids": torch.randint(5, int(config["vocab_size"]), (rows, seq), generator=generator),
        "attention_mask": torch.ones(rows, seq, dtype=torch.long),
        "token_type_ids": torch.zeros(rows, seq, dtype=torch.long),
        "context_mask": context.expand(rows, seq).clone(),
        "cls_index": torch.zeros(rows, dtype=torch.long),
        "start_positions": torch.randint(seq // 4, seq - 8, (rows,), generator=generator),
        "is_short": torch.arange(rows) % 2 == 0,
    }
    batch["end_positions"] = batch["start_positions"] + 3
    batch = {k: v.to(gpu.device) for k, v in batch.items()}
    weights = loss_weights(params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
    model.train()

    def qa_step() -> None:  # QaTrainer.training_step(apply=True) with one accumulation step
        with autocast_for(gpu.device):
            loss, _ = compute_loss(model, batch, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain_step() -> None:
        with autocast_for(gpu.device):
            loss = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                start_positions=batch["start_positions"],
                end_positions=batch["end_positions"],
            ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    gpu.reset_peak()
    qa_step()
    peak = gpu.peak()
    work, plain = compare("qa", qa_step, plain_step, args.repeats, gpu.sync)
    report("qa", args.qa_model, work, plain, "a plain step", 1.05, rows * seq)
    estimate = estimate_memory("qa", params.model_dump(mode="json"), 1, 1, model_shape(config), gpu_for(None, None))
    report_memory("qa", peak, estimate)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU, tiny configs of the same architectures")
    parser.add_argument("--kinds", default="fomaml,moe-steer,qa")
    parser.add_argument("--fomaml-model", default="Llama-3.2-1B")
    parser.add_argument("--moe-model", default="OLMoE-1B-7B")
    parser.add_argument("--qa-model", default="roberta-large")
    parser.add_argument("--dtype", default="bfloat16", help="fomaml dtype and moe-steer torch_dtype")
    parser.add_argument("--seq", type=int, default=512, help="max_length: every row fills it")
    parser.add_argument("--batch", type=int, default=4, help="fomaml rows; moe-steer and qa use twice as many")
    parser.add_argument("--k", type=int, default=5, help="fomaml inner steps")
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from datasweep.testing.real_configs import REAL_CONFIGS, TINY_CONFIGS

    if args.dry:
        tiny = {"fomaml": "llama", "moe-steer": "olmoe", "qa": "roberta"}
        ids = {"vocab_size": 256, "eos_token_id": 2}  # the tiny tokenizer's
        configs = {kind: {**TINY_CONFIGS[name], **ids} for kind, name in tiny.items()}
        args.seq, args.batch, args.k, args.top_n, args.repeats, args.dtype = min(args.seq, 32), 2, 2, 3, 1, "float32"
        args.fomaml_model, args.moe_model, args.qa_model = "tiny llama", "tiny olmoe", "tiny roberta"
        device = torch.device("cpu")
    else:
        configs = {
            "fomaml": REAL_CONFIGS[args.fomaml_model],
            "moe-steer": REAL_CONFIGS[args.moe_model],
            "qa": REAL_CONFIGS[args.qa_model],
        }
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU here: run with --dry for the CPU check")
        device = torch.device("cuda")
    gpu = Gpu(device)
    name = torch.cuda.get_device_name(device) if gpu.cuda else "cpu"
    print(f"device {name}; seq {args.seq}; dtype {args.dtype}; torch {torch.__version__}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            torch.manual_seed(0)
            if kind == "fomaml":
                bench_fomaml(args, gpu, configs[kind], Path(tmp))
            elif kind == "moe-steer":
                bench_moe_steer(args, gpu, configs[kind], Path(tmp))
            elif kind == "qa":
                bench_qa(args, gpu, configs[kind])
            else:
                parser.error(f"--kinds: unknown kind {kind!r}")
            gpu.release()  # the kind's model and optimizer are gone with its function
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
