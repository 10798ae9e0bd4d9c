"""A controllable stand-in for `datasweep worker` in the runner tests (failures, slow stages, Ctrl-C).

    fake_worker.py --mode ok|fail|slow STAGE --spec FILE

It honours the worker contract: reads the WorkerSpec, writes its outputs, finalizes with manifest.json last.
`slow` writes a `started` marker and sleeps until signalled; `fail` exits 1 with a message.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from datasweep.api.worker import load_worker_spec
from datasweep.store.manifest import Usage, finalize_artifact


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="ok")
    parser.add_argument("stage")
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    spec = load_worker_spec(args.spec, expected_stage=args.stage)
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"fake {args.stage} worker for {spec.artifact}", flush=True)
    if args.mode == "fail" or (args.mode == "fail-training" and args.stage != "generate"):
        print("simulated failure: the model diverged", file=sys.stderr, flush=True)
        return 1
    if args.mode == "data-error":  # what a worker prints for bad input: the same in every point
        print(f"error: {spec.source_dir}/copa_train.jsonl:1: field 'text' to rephrase is missing", file=sys.stderr)
        print("  the record has: id, premise; set params.rephrase_fields", file=sys.stderr, flush=True)
        return 2
    if args.mode == "slow":
        (out / "started").write_text("1")
        time.sleep(60)
    if args.stage == "generate":
        assert spec.source_dir is not None
        target = out / spec.dataset
        target.mkdir(exist_ok=True)
        for source in sorted(Path(spec.source_dir).glob("*.jsonl")):
            shutil.copyfile(source, target / source.name)
    else:
        assert Path(spec.inputs["data"], "manifest.json").is_file(), "the input artifact is not complete"
        (out / "model.txt").write_text(f"trained on {spec.inputs['data']}\n")
    extra = {}
    if spec.stage == "fomaml":  # a loss that falls with more inner steps and a larger inner learning rate
        after = 2.0 - 0.1 * spec.params.get("num_inner_steps", 1) - 1000 * spec.params.get("inner_lr", 0.0)
        extra = {"mean_before_loss": 2.0, "mean_after_loss": round(after, 6), "total_steps": 5}
    usage = Usage(requests=1, gpu_seconds=2.0)
    finalize_artifact(out, fingerprint=spec.fingerprint, stage=spec.stage, usage=usage, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
