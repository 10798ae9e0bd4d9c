"""FOMAML correctness on a tiny Llama: loss mask, meta-gradient, K=0 == SFT, resume, benefit over SFT."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from datasweep.api.stages.fomaml import FomamlParams
from datasweep.workloads.fomaml.data import DataError, TaskData
from datasweep.workloads.fomaml.distributed import init_distributed
from datasweep.workloads.fomaml.modeling import IGNORE_INDEX, ExampleEncoder, collate, load_model_and_tokenizer
from datasweep.workloads.fomaml.stage import shard_model
from datasweep.workloads.fomaml.trainer import MetaTrainer, cyclic_batches

from .conftest import WORDS


def make_tasks(n_tasks: int = 3, seed: int = 0) -> list[TaskData]:
    tasks = []
    for task in range(n_tasks):
        rng = random.Random(seed * 100 + task)
        rows = [
            (f"question {rng.randint(0, 99)} {rng.randint(0, 9)}", f"{WORDS[task]} {WORDS[(task + 1) % 6]}")
            for _ in range(30)
        ]
        tasks.append(TaskData(f"t{task}", rows[:8], rows[8:18], rows[18:]))
    return tasks


def make_trainer(model_dir: Path, dtype: str = "float32", **overrides: Any) -> MetaTrainer:
    settings: dict[str, Any] = {
        "inner_lr": 0.1,
        "num_inner_steps": 2,
        "inner_batch_size": 3,
        "query_batch_size": 4,
        "meta_batch_size": 2,
        "outer_lr": 1e-2,
        "total_steps": 4,
        "dtype": dtype,
    }
    settings.update(overrides)
    params = FomamlParams(**settings)
    dist = init_distributed(params.use_fsdp)
    model, tokenizer = load_model_and_tokenizer(
        str(model_dir), params.dtype, params.enable_gradient_checkpointing, dist.device
    )
    if dist.fsdp:
        model = shard_model(model, dist)
    return MetaTrainer(model, tokenizer, make_tasks(), params, dist)


def test_loss_weights_exactly_response_and_eos_positions(tiny_model: Path) -> None:
    import torch

    trainer = make_trainer(tiny_model)
    tokenizer = trainer.encoder.tokenizer
    encoder = ExampleEncoder(tokenizer, max_length=64)
    prompt_ids = tokenizer.encode("Q: yes", add_special_tokens=False)
    response_ids = tokenizer.encode(" no", add_special_tokens=False)
    encoded = encoder.encode("Q: yes", " no")
    n_prompt = 1 + len(prompt_ids)  # BOS + prompt
    assert encoded.input_ids == [tokenizer.bos_token_id, *prompt_ids, *response_ids, tokenizer.eos_token_id]
    assert encoded.labels == [IGNORE_INDEX] * n_prompt + [*response_ids, tokenizer.eos_token_id]

    # The loss is the mean CE of the logits at positions n_prompt-1 .. end-1 predicting the next token.
    batch = collate([encoded], trainer.pad_id, torch.device("cpu"))
    loss = trainer.batch_loss([encoded])
    logits = trainer.model(input_ids=batch["input_ids"]).logits[0].float()
    targets = encoded.input_ids[n_prompt:]
    positions = range(n_prompt - 1, len(encoded.input_ids) - 1)
    manual = torch.stack(
        [-torch.log_softmax(logits[pos], -1)[tok] for pos, tok in zip(positions, targets, strict=True)]
    ).mean()
    assert torch.allclose(loss, manual, atol=1e-5)

    # Padding a second, longer example does not change the first one's contribution.
    longer = encoder.encode("Q: yes yes yes yes", " no no")
    pair = collate([encoded, longer], trainer.pad_id, torch.device("cpu"))
    assert pair["labels"][0, len(encoded.input_ids) :].eq(IGNORE_INDEX).all()
    assert pair["attention_mask"][0].sum() == len(encoded.input_ids)


def test_truncation_keeps_prompt_mask(tiny_model: Path) -> None:
    trainer = make_trainer(tiny_model)
    encoder = ExampleEncoder(trainer.encoder.tokenizer, max_length=8)
    encoded = encoder.encode("a long prompt with many words", " and a long response too")
    assert len(encoded.input_ids) == 8
    assert encoder.truncated == 1
    assert encoded.target_count == sum(1 for label in encoded.labels if label != IGNORE_INDEX)


def test_a_max_length_that_truncates_every_response_is_refused(tiny_model: Path) -> None:
    # Seen on real Copa output: a long prompt template and a short max_length trained "successfully" at loss 0.0.
    trainer = make_trainer(tiny_model)  # the default max_length keeps every response
    assert trainer.encoder.without_response == 0
    long_prompt = " ".join(WORDS * 4)
    tasks = [TaskData(f"t{i}", [(long_prompt, "yes")] * 4, [(long_prompt, "no")] * 4, []) for i in range(2)]
    params = FomamlParams(max_length=8, inner_batch_size=2, query_batch_size=2, meta_batch_size=2)
    with pytest.raises(DataError, match=r"params\.max_length=8 leaves no response token in any of the 16"):
        MetaTrainer(trainer.model, trainer.encoder.tokenizer, tasks, params, trainer.dist)


def reference_meta_gradient(trainer: MetaTrainer, plans: list[Any]) -> list[Any]:
    """Independent first-order MAML with torch.func.functional_call and an explicit log-softmax loss."""
    import torch
    from torch.func import functional_call

    model = trainer.model
    names = [name for name, _ in model.named_parameters()]
    theta0 = {name: p.detach().clone() for name, p in model.named_parameters()}

    def loss_at(params: dict[str, Any], examples: list[Any]) -> Any:
        batch = collate(examples, trainer.pad_id, torch.device("cpu"))
        logits = functional_call(
            model, params, (), {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        ).logits
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE_INDEX
        nll = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (nll * mask).sum() / mask.sum()

    total = [torch.zeros_like(theta0[name]) for name in names]
    for plan in plans:
        theta = dict(theta0)
        for batch in plan.support_batches:
            leaves = {name: theta[name].detach().requires_grad_(True) for name in names}
            grads = torch.autograd.grad(
                loss_at(leaves, [trainer.support[plan.task][i] for i in batch]), list(leaves.values())
            )
            theta = {
                name: leaves[name].detach() - trainer.params.inner_lr * g for name, g in zip(names, grads, strict=True)
            }
        leaves = {name: theta[name].detach().requires_grad_(True) for name in names}
        grads = torch.autograd.grad(
            loss_at(leaves, [trainer.query[plan.task][i] for i in plan.query_batch]), list(leaves.values())
        )
        total = [t + g for t, g in zip(total, grads, strict=True)]
    return [t / len(plans) for t in total]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_meta_gradient_matches_functional_reference(tiny_model: Path, checkpointing: bool) -> None:
    import torch

    trainer = make_trainer(tiny_model, dtype="float64", enable_gradient_checkpointing=checkpointing, num_inner_steps=3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    plans = trainer.plan(0)
    assert len(plans) == 2
    assert all(len(p.support_batches) == 3 for p in plans)
    meta, summary = trainer.meta_gradient(plans)
    # functional_call cannot see checkpointed recomputation, so the reference runs on a plain model.
    plain = make_trainer(tiny_model, dtype="float64", num_inner_steps=3) if checkpointing else trainer
    reference = reference_meta_gradient(plain, plans)
    worst = max(float((m - r).abs().max()) for m, r in zip(meta, reference, strict=True))
    assert worst < 1e-6
    assert max(float(r.abs().max()) for r in reference) > 1e-3  # a real gradient, not zeros
    # θ is restored after the inner loops.
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert summary["query_loss"] > 0
    assert summary["support_loss"] > 0


def test_zero_inner_steps_equals_plain_sft_on_query(tiny_model: Path) -> None:
    import torch

    trainer = make_trainer(tiny_model, dtype="float64", num_inner_steps=0, warmup_steps=0, max_grad_norm=0.5)
    reference = make_trainer(tiny_model, dtype="float64", num_inner_steps=0)
    plans = trainer.plan(0)
    trainer.outer_step(trainer.meta_gradient(plans)[0])

    model = reference.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=reference.params.outer_lr, weight_decay=0.0)
    losses = [reference.batch_loss([reference.query[p.task][i] for i in p.query_batch]) for p in plans]
    (sum(losses) / len(losses)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    optimizer.step()
    worst = max(float((a - b).abs().max()) for a, b in zip(trainer.model.parameters(), model.parameters(), strict=True))
    assert worst < 1e-10


def test_resume_after_interruption_matches_uninterrupted_run(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    straight = make_trainer(tiny_model, total_steps=4, save_freq=2, test_freq=0, warmup_steps=2)
    straight.train(tmp_path / "straight")

    class Killed(RuntimeError):
        pass

    def kill_at_three(step: int) -> None:
        if step == 3:
            raise Killed

    interrupted = make_trainer(tiny_model, total_steps=4, save_freq=2, test_freq=0, warmup_steps=2)
    with pytest.raises(Killed):
        interrupted.train(tmp_path / "resumed", on_step=kill_at_three)
    resumed = make_trainer(tiny_model, total_steps=4, save_freq=2, test_freq=0, warmup_steps=2)
    resumed.train(tmp_path / "resumed")
    assert resumed.step == 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert lines == (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()


def test_cyclic_batches_cover_items_without_repeats_within_a_batch() -> None:
    batches = cyclic_batches(5, 2, 5, random.Random(0))
    assert all(len(set(b)) == 2 for b in batches)
    assert set(batches[0] + batches[1] + batches[2][:1]) == {0, 1, 2, 3, 4}  # one pass before repeating
    assert cyclic_batches(2, 4, 1, random.Random(0))[0] in ([0, 1], [1, 0])


@pytest.mark.slow
def test_meta_training_beats_plain_sft_after_adaptation(tiny_model: Path) -> None:
    """Same data (support + query of every task), same outer optimizer and steps, same adaptation."""
    import torch

    steps, inner_lr = 40, 0.1
    common = {
        "inner_lr": inner_lr,
        "num_inner_steps": 3,
        "inner_batch_size": 4,
        "query_batch_size": 4,
        "meta_batch_size": 3,
        "outer_lr": 3e-3,
        "total_steps": steps,
        "seed": 0,
    }
    tasks = make_tasks(6)
    dist = init_distributed()

    model, tokenizer = load_model_and_tokenizer(str(tiny_model), "float32", False, dist.device)
    meta = MetaTrainer(model, tokenizer, tasks, FomamlParams(**common), dist)
    for _ in range(steps):
        meta.train_step()
    meta_eval = meta.evaluate()

    model, tokenizer = load_model_and_tokenizer(str(tiny_model), "float32", False, dist.device)
    sft = MetaTrainer(model, tokenizer, tasks, FomamlParams(**common), dist)
    mixed = [e for t in range(len(tasks)) for e in sft.support[t] + sft.query[t]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = random.Random(0)
    for _ in range(steps):  # 12 examples per step, as a meta-batch's query examples (3 tasks x 4)
        loss = sft.batch_loss([mixed[i] for i in rng.sample(range(len(mixed)), 12)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    sft_eval = sft.evaluate()
    assert meta_eval["mean_after_loss"] < sft_eval["mean_after_loss"], (meta_eval, sft_eval)
