"""First-order MAML (FOMAML) on a causal LM, with few-shot evaluation, checkpoints and resume.

One meta-step: for each task of a meta-batch, from θ take K SGD steps at inner_lr on support batches,
take the gradient of the query loss at the adapted weights, restore θ. The task gradients are averaged
and applied to θ by AdamW (outer_lr, linear warm-up, clipping). Tasks run one after another, so only one
task's graph is alive at a time; θ is saved once per step into a reusable buffer.

Parallelism (torchrun): replicas (default) shard the tasks of a meta-batch across ranks and all-reduce
the summed meta-gradient; FSDP shards parameters, so all ranks work on the same task and split each
batch's rows, and FSDP's gradient averaging combines them. One process is the same code with one rank.
Sampling of tasks and batches derives from (seed, step): it does not depend on the number of ranks and
needs no state to resume.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasweep.api.stages.fomaml import FomamlParams
from datasweep.store.atomic import append_line_durably, atomic_write_text
from datasweep.workloads.fomaml.data import DataError, TaskData
from datasweep.workloads.fomaml.distributed import DistContext
from datasweep.workloads.fomaml.modeling import Encoded, ExampleEncoder, collate, token_losses
from datasweep.workloads.fomaml.plots import EVAL_HISTORY, METRICS, plot_fomaml_curves
from datasweep.workloads.progress import Progress
from datasweep.workloads.tensorboard import ScalarWriter, open_writer

if TYPE_CHECKING:
    import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"


@dataclass(frozen=True)
class TaskPlan:
    task: int
    support_batches: list[list[int]]
    query_batch: list[int]


def cyclic_batches(n_items: int, batch_size: int, n_batches: int, rng: random.Random) -> list[list[int]]:
    """`n_batches` batches drawn without replacement from reshuffled passes over `n_items` items."""
    size = min(batch_size, n_items)
    pool: list[int] = []
    batches: list[list[int]] = []
    for _ in range(n_batches):
        batch: list[int] = []
        while len(batch) < size:
            if not pool:
                pool = list(range(n_items))
                rng.shuffle(pool)
            candidate = pool.pop()
            if candidate not in batch:
                batch.append(candidate)
        batches.append(batch)
    return batches


def _local(tensor: Any) -> Any:
    """The local shard of an FSDP (DTensor) parameter or gradient; the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class MetaTrainer:
    def __init__(
        self, model: Any, tokenizer: Any, tasks: Sequence[TaskData], params: FomamlParams, dist: DistContext
    ) -> None:
        import torch

        if dist.fsdp:
            for name, size in (
                ("inner_batch_size", params.inner_batch_size),
                ("query_batch_size", params.query_batch_size),
            ):
                if size % dist.world_size:
                    raise ValueError(f"{name}={size} must be a multiple of the {dist.world_size} ranks with use_fsdp")
        self.model = model
        self.params = params
        self.dist = dist
        self.tasks = list(tasks)
        self.encoder = ExampleEncoder(tokenizer, params.max_length, params.apply_chat_template)
        self.pad_id = int(tokenizer.pad_token_id)
        self.support = [self.encoder.encode_all(task.support) for task in self.tasks]
        self.query = [self.encoder.encode_all(task.query) for task in self.tasks]
        examples = sum(len(encoded) for encoded in (*self.support, *self.query))
        if examples and self.encoder.without_response == examples:
            # every loss would be 0: training would "succeed" and learn nothing
            raise DataError(
                f"params.max_length={params.max_length} leaves no response token in any of the {examples} support "
                f"and query examples (the longest prompt is {self.encoder.longest_prompt} tokens): raise "
                "params.max_length or shorten "
                + ("the prompts in the tasks' files" if params.tasks else "params.prompt_template")
            )
        self._test: dict[int, list[Encoded]] = {}
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=params.outer_lr, weight_decay=params.weight_decay)
        warmup = params.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: min(1.0, (done + 1) / warmup) if warmup else 1.0
        )
        self.step = 0
        self.board: ScalarWriter | None = None  # TensorBoard events (main rank, params.tensorboard)
        self._theta: list[Any] | None = None
        self._meta: list[Any] | None = None

    # ------------------------------------------------------------ sampling

    def plan(self, step: int) -> list[TaskPlan]:
        """The tasks and batches of meta-step `step` (the same on every rank)."""
        rng = random.Random(f"{self.params.seed}:meta-step:{step}")
        chosen: list[int] = []
        while len(chosen) < self.params.meta_batch_size:
            order = list(range(len(self.tasks)))
            rng.shuffle(order)
            chosen.extend(order[: self.params.meta_batch_size - len(chosen)])
        plans = []
        for task in chosen:
            support = cyclic_batches(
                len(self.support[task]), self.params.inner_batch_size, self.params.num_inner_steps, rng
            )
            query = cyclic_batches(len(self.query[task]), self.params.query_batch_size, 1, rng)[0]
            plans.append(TaskPlan(task, support, query))
        return plans

    # ------------------------------------------------------------ gradients

    def batch_loss(self, examples: Sequence[Encoded]) -> torch.Tensor:
        """Token-mean response loss of a batch; with FSDP each rank takes its rows, scaled for averaging."""
        import torch

        if not self.dist.fsdp:
            losses, mask, _ = token_losses(self.model, collate(examples, self.pad_id, self.dist.device))
            return losses.sum() / mask.sum().clamp(min=1)
        rows = list(examples[self.dist.rank :: self.dist.world_size])
        active = bool(rows)
        losses, mask, _ = token_losses(self.model, collate(rows or list(examples[:1]), self.pad_id, self.dist.device))
        count = (mask.sum() if active else mask.sum() * 0).to(torch.float64)
        self.dist.all_reduce_sum([count])
        scale = self.dist.world_size / max(float(count), 1.0)
        return losses.sum() * (scale if active else 0.0)

    def _take_grads(self) -> list[Any]:
        import torch

        grads = []
        for p in self.trainable:
            grads.append(_local(p.grad) if p.grad is not None else torch.zeros_like(_local(p)))
            p.grad = None
        return grads

    def _sgd_step(self, examples: Sequence[Encoded], lr: float) -> torch.Tensor:
        import torch

        loss = self.batch_loss(examples)
        loss.backward()  # type: ignore[no-untyped-call]
        grads = self._take_grads()
        with torch.no_grad():
            torch._foreach_add_([_local(p) for p in self.trainable], grads, alpha=-lr)
        return loss.detach()

    def _save_theta(self) -> None:
        import torch

        with torch.no_grad():
            if self._theta is None:
                self._theta = [_local(p).detach().clone() for p in self.trainable]
            else:
                torch._foreach_copy_(self._theta, [_local(p).detach() for p in self.trainable])

    def _restore_theta(self) -> None:
        import torch

        assert self._theta is not None
        with torch.no_grad():
            torch._foreach_copy_([_local(p) for p in self.trainable], self._theta)

    def meta_gradient(self, plans: Sequence[TaskPlan]) -> tuple[list[Any], dict[str, float]]:
        """The FOMAML meta-gradient of a meta-batch (averaged over its tasks, reduced over ranks).

        Parameters are left at θ. Returns the gradient (parameter-shaped, local shards under FSDP) and
        the mean pre-adaptation support loss and post-adaptation query loss.
        """
        import torch

        if self._meta is None:
            self._meta = [torch.zeros_like(p) for p in self.trainable]
        else:
            torch._foreach_zero_(self._meta)
        meta_local = [_local(m) for m in self._meta]
        local_plans = list(plans) if self.dist.fsdp else list(plans[self.dist.rank :: self.dist.world_size])
        stats = torch.zeros(3, dtype=torch.float64, device=self.dist.device)  # query, support, tasks with K>0
        self._save_theta()
        for plan in local_plans:
            for k, batch in enumerate(plan.support_batches):
                loss = self._sgd_step([self.support[plan.task][i] for i in batch], self.params.inner_lr)
                if k == 0:
                    stats[1] += loss.to(torch.float64)
                    stats[2] += 1
            query_loss = self.batch_loss([self.query[plan.task][i] for i in plan.query_batch])
            query_loss.backward()  # type: ignore[no-untyped-call]
            torch._foreach_add_(meta_local, self._take_grads())
            stats[0] += query_loss.detach().to(torch.float64)
            self._restore_theta()
        if not self.dist.fsdp:
            self.dist.all_reduce_sum(meta_local)
        self.dist.all_reduce_sum([stats])
        if self.dist.fsdp:
            stats /= self.dist.world_size  # every rank summed its share of the same tasks
        torch._foreach_div_(meta_local, float(len(plans)))
        values = stats.tolist()
        summary = {"query_loss": values[0] / len(plans)}
        if values[2] > 0:
            summary["support_loss"] = values[1] / values[2]
        return self._meta, summary

    def outer_step(self, meta: list[Any]) -> float:
        """Apply the meta-gradient with the outer optimizer; returns the gradient norm before clipping."""
        import torch

        for p, g in zip(self.trainable, meta, strict=True):
            p.grad = g
        max_norm = self.params.max_grad_norm if self.params.max_grad_norm is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        for p in self.trainable:
            p.grad = None
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def train_step(self) -> dict[str, float]:
        lr = float(self.optimizer.param_groups[0]["lr"])
        meta, summary = self.meta_gradient(self.plan(self.step))
        grad_norm = self.outer_step(meta)
        self.step += 1
        return {"step": self.step, "lr": lr, "grad_norm": grad_norm, **summary}

    # ------------------------------------------------------------ evaluation

    def _test_examples(self, task: int) -> list[Encoded]:
        if task not in self._test:
            self._test[task] = self.encoder.encode_all(self.tasks[task].test)
        return self._test[task]

    def _score(self, examples: Sequence[Encoded]) -> dict[str, float]:
        """Loss, token accuracy and exact match (every response token argmax-correct) on examples."""
        import torch

        totals = torch.zeros(4, dtype=torch.float64, device=self.dist.device)  # loss, tokens, hits, exact
        size = self.params.eval_batch_size
        with torch.no_grad():
            for start in range(0, len(examples), size):
                batch = list(examples[start : start + size])
                rows = batch[self.dist.rank :: self.dist.world_size] if self.dist.fsdp else batch
                active = bool(rows)
                losses, mask, hits = token_losses(self.model, collate(rows or batch[:1], self.pad_id, self.dist.device))
                if not active:
                    continue
                per_row_targets = mask.sum(dim=1)
                exact = ((hits.sum(dim=1) == per_row_targets) & (per_row_targets > 0)).sum()
                totals += torch.stack([losses.sum(), mask.sum(), hits.sum(), exact]).to(torch.float64)
        if self.dist.fsdp:
            self.dist.all_reduce_sum([totals])
        loss_sum, tokens, hits_sum, exact_sum = totals.tolist()
        return {
            "loss": loss_sum / max(tokens, 1.0),
            "token_accuracy": hits_sum / max(tokens, 1.0),
            "exact_match": exact_sum / max(len(examples), 1),
            "examples": len(examples),
        }

    def evaluate(self) -> dict[str, Any]:
        """Few-shot evaluation: each task's test set before and after K SGD steps of adaptation."""
        steps = self.params.effective_eval_inner_steps
        task_ids = [t for t in range(len(self.tasks)) if self.tasks[t].test]
        local = task_ids if self.dist.fsdp else task_ids[self.dist.rank :: self.dist.world_size]
        results: dict[str, Any] = {}
        self._save_theta()
        for task in local:
            data = self.tasks[task]
            if self.params.eval_k_shot is not None and self.params.eval_k_shot in data.shots:
                adapt = self.encoder.encode_all(data.shots[self.params.eval_k_shot])
            else:
                adapt = self.support[task]
            rng = random.Random(f"{self.params.seed}:eval:{data.name}")
            before = self._score(self._test_examples(task))
            for batch in cyclic_batches(len(adapt), self.params.inner_batch_size, steps, rng):
                self._sgd_step([adapt[i] for i in batch], self.params.inner_lr)
            after = self._score(self._test_examples(task))
            self._restore_theta()
            results[data.name] = {"before": before, "after": after, "adaptation_steps": steps}
        merged: dict[str, Any] = {}
        for part in self.dist.gather_objects(results):
            merged.update(part)
        summary: dict[str, Any] = {"step": self.step, "tasks": dict(sorted(merged.items()))}
        for phase in ("before", "after"):
            for metric in ("loss", "token_accuracy", "exact_match"):
                values = [r[phase][metric] for r in merged.values()]
                summary[f"mean_{phase}_{metric}"] = sum(values) / len(values) if values else None
        return summary

    # ------------------------------------------------------------ checkpoints

    def _state_dict_options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def full_model_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state: dict[str, Any] = get_model_state_dict(self.model, options=self._state_dict_options())
        return state

    def save_checkpoint(self, root: Path) -> None:
        import torch
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        model_state = self.full_model_state()
        optimizer_state = get_optimizer_state_dict(self.model, self.optimizer, options=self._state_dict_options())
        if self.dist.is_main:
            name = f"step_{self.step:08d}"
            tmp, final = root / f".{name}.tmp", root / name
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            state = {
                "model": model_state,
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if self.dist.on_gpu else None,
                "python_rng": json.dumps(random.getstate()),
            }
            with (tmp / "state.pt").open("wb") as handle:
                torch.save(state, handle)
                handle.flush()
                import os

                os.fsync(handle.fileno())
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            atomic_write_text(root / LATEST, name + "\n")
            kept = sorted(p for p in root.glob("step_*") if p.is_dir())
            for old in kept[: -self.params.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()

    def load_checkpoint(self, root: Path) -> bool:
        """Resume from the latest complete checkpoint under `root`; False when there is none."""
        import torch
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        pointer = root / LATEST
        if not pointer.exists():
            return False
        path = root / pointer.read_text(encoding="utf-8").strip() / "state.pt"
        state = torch.load(path, map_location="cpu", weights_only=False)
        set_model_state_dict(self.model, state["model"], options=self._state_dict_options())
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=self._state_dict_options())
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.dist.on_gpu:
            torch.cuda.set_rng_state(state["cuda_rng"])
        python_state = json.loads(state["python_rng"])
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
        return True

    # ------------------------------------------------------------ loop

    def train(self, output_dir: Path, on_step: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Meta-train to total_steps, resuming from output_dir's last checkpoint; returns eval history."""
        checkpoints = output_dir / CHECKPOINTS
        metrics_path = output_dir / METRICS
        eval_path = output_dir / EVAL_HISTORY
        resumed = self.load_checkpoint(checkpoints)
        if self.dist.is_main:
            for path in (metrics_path, eval_path):
                _truncate_after(path, self.step if resumed else 0)
        history: list[dict[str, Any]] = []
        params = self.params
        progress = Progress("fomaml", params.total_steps, "steps", initial=self.step) if self.dist.is_main else None
        if self.dist.is_main and self.board is None:
            self.board = open_writer(output_dir, params.tensorboard, self.step if resumed else None)
        try:
            self._train_loop(metrics_path, eval_path, checkpoints, history, progress, on_step)
        finally:
            if progress is not None:
                progress.close()
            if self.board is not None:
                self.board.flush()  # kept open for the final evaluation (run_train closes it)
        return history

    def record_evaluation(self, summary: dict[str, Any]) -> None:
        """An evaluation's mean few-shot scores into the TensorBoard events (main rank)."""
        if self.board is None:
            return
        self.board.scalars(
            {
                f"fewshot/{metric}_{phase}": summary.get(f"mean_{phase}_{metric}")
                for metric in ("loss", "token_accuracy", "exact_match")
                for phase in ("before", "after")
            },
            int(summary["step"]),
        )
        self.board.flush()

    def close_board(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def _train_loop(
        self,
        metrics_path: Path,
        eval_path: Path,
        checkpoints: Path,
        history: list[dict[str, Any]],
        progress: Progress | None,
        on_step: Callable[[int], None] | None,
    ) -> None:
        params = self.params
        while self.step < params.total_steps:
            metrics = self.train_step()
            if progress is not None:
                progress.update(self.step, query_loss=metrics.get("query_loss"))
            if self.dist.is_main and (self.step % params.log_freq == 0 or self.step == params.total_steps):
                append_line_durably(metrics_path, json.dumps(metrics, sort_keys=True))
                if self.board is not None:
                    self.board.scalars(
                        {
                            "meta/query_loss": metrics.get("query_loss"),
                            "meta/support_loss": metrics.get("support_loss"),
                            "meta/learning_rate": metrics["lr"],
                            "meta/grad_norm": metrics["grad_norm"],
                        },
                        self.step,
                    )
            if params.test_freq and self.step % params.test_freq == 0 and self.step < params.total_steps:
                summary = self.evaluate()
                history.append(summary)
                if self.dist.is_main:
                    append_line_durably(eval_path, json.dumps(summary, sort_keys=True))
                    self.record_evaluation(summary)
                    plot_fomaml_curves(metrics_path.parent)  # redrawn at every evaluation: watchable
            if self.step % params.save_freq == 0 or self.step == params.total_steps:
                self.save_checkpoint(checkpoints)
            if on_step is not None:
                on_step(self.step)


def _truncate_after(path: Path, step: int) -> None:
    """Drop lines of a metrics file written after `step` (they are redone after a resume)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
