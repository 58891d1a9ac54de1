"""Exact match of the default model on built-in tasks before and after one short LoRA run on the task's own data.

For each task: the base model's exact match on its test split, then a LoRA run (the project's one SFT loop)
on ``--n-train`` train-split records of the task, then the exact match again. It shows which tasks one short
run can move (the copy tasks first / last / first_last) and which it cannot (the arithmetic composites), the
reason the demo targets first_last (docs/benchmarks.md, "Tasks where accuracy moves").

    python bench/task_accuracy.py                       # the default task list
    python bench/task_accuracy.py --tasks first_last --n-train 16

Prints one row per task, with the CPU model, load average and CPU seconds.
"""
from __future__ import annotations

import argparse
import os
import time

DEFAULT_TASKS = "first,last,first_last,lookup,reverse,sort,add_reverse,lookup_add,sort_desc"



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated built-in tasks")
    ap.add_argument("--n-train", type=int, default=32, help="train-split records of the task")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n-eval", type=int, default=24, help="test-split questions (exact match)")
    ap.add_argument("--model", default="default")
    a = ap.parse_args()
    os.environ.setdefault("G2IS_THREADS", "1")

    from g2is_core.data.encoding import encode_all
    from g2is_core.data.tasks import make_task_records
    from g2is_core.loop.evaluation import evaluate
    from g2is_core.models.loading import load_model
    from g2is_core.models.lora import LoraSettings, attach_lora
    from g2is_core.models.training import TrainConfig, train
    from g2is_core.runtime import cpu_model

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()}")
    print(f"LoRA r=8 alpha=16, lr {a.lr}, {a.epochs} epochs, batch {a.batch_size}, {a.n_train} train records, "
          f"{a.n_eval} test questions, model {a.model}")
    print(f"{'task':<12} {'before':>7} {'after':>7} {'cpu_s':>6}  example answer after")
    for task in a.tasks.split(","):
        t0 = time.process_time()
        lm = load_model(a.model)
        before = evaluate(lm, f"builtin:{task}", limit=a.n_eval)
        enc, _ = encode_all(lm.tokenizer, make_task_records(task, a.n_train, 0, "train"), max_length=96)
        model = attach_lora(lm.model, LoraSettings(r=8, alpha=16, dropout=0.0))
        train(model, enc, TrainConfig(lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, seed=0),
              pad_id=lm.tokenizer.pad_token_id)
        lm.model = model
        after = evaluate(lm, f"builtin:{task}", limit=a.n_eval)
        ex = after.per_example[0] if after.per_example else {}
        print(f"{task:<12} {before.metrics['accuracy']:>7.3f} {after.metrics['accuracy']:>7.3f} "
              f"{time.process_time() - t0:>6.0f}  {ex.get('prediction', '')!r} (gold {ex.get('gold', '')!r})",
              flush=True)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
