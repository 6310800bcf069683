"""Step time of one process against two FSDP2 processes for the same global batch (CPU, gloo).

    python benchmarks/distributed_step.py [--json] [--tokens 262144]

Each run is a real `trainer.run` (data stream, schedule, clipping, logging) of the same config;
only `train.world_size` differs, so the ranks split every batch in two. Step time is the run's
training wall time over its steps (evaluation and checkpoints excluded). The two ranks share this
machine's cores, so on a 2-core machine the ideal is no slower, not twice as fast: the figure
measures what FSDP's all-gathers and reduce-scatters cost on top of the split compute.
Two more two-process rows price the norm test: micro-batches of 2 (4 per rank) without it, and
with `train.batch_schedule=norm_test` testing every step (η so large the batch never grows),
where gradients are reduced after every micro-batch and their norms taken.
Writes benchmarks/results/distributed_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from _results import save

from trainer.compose import compose
from trainer.loop import run

SHAPE = ["model.width=256", "model.depth=4", "model.head_dim=64", "model.base_width=256",
         "train.seq_len=256", "train.batch_size=16", "data=synthetic", "train.device=cpu",
         "schedule=constant", "schedule.warmup_tokens=0", "train.eval_tokens=4096"]


NORM_TEST = ["train.batch_schedule=norm_test", "train.norm_test_every=1",
             "train.norm_test_eta=1000"]


def measure(world_size: int, tokens: int, extra: tuple[str, ...] = (), name: str = "") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(SHAPE + [f"train.tokens={tokens}", f"train.world_size={world_size}",
                               f"storage_root={tmp}", *extra])
        summary = run(cfg).summary
    steps, wall = summary["final/steps"], summary["final/wall_s"]
    return {"run": name or f"{world_size} process(es)", "world_size": world_size,
            "steps": steps, "step_s": wall / steps,
            "tokens_per_s": summary["final/tokens"] / wall,
            "final_train_loss": summary["final/train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tokens", type=int, default=262_144)
    args = parser.parse_args()
    rows = [measure(w, args.tokens) for w in (1, 2)]
    rows.append(measure(2, args.tokens, ("train.micro_batch_size=2",), "2, micro 2"))
    rows.append(measure(2, args.tokens, ("train.micro_batch_size=2", *NORM_TEST),
                        "2, micro 2, norm test every step"))
    result = {"rows": rows, "step_time_ratio_2_over_1": rows[1]["step_s"] / rows[0]["step_s"],
              "norm_test_step_ratio": rows[3]["step_s"] / rows[2]["step_s"],
              "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    path = save("distributed_step", result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'run':<34} {'steps':>6} {'step s':>8} {'tok/s':>9} {'train loss':>10}")
    for r in rows:
        print(f"{r['run']:<34} {r['steps']:>6} {r['step_s']:>8.3f} "
              f"{r['tokens_per_s']:>9.0f} {r['final_train_loss']:>10.4f}")
    print(f"two processes / one: {result['step_time_ratio_2_over_1']:.2f}× step time "
          f"(load {result['load_avg'][0]:.1f}); a norm-test step costs "
          f"{result['norm_test_step_ratio']:.2f}× a plain one; written to {path}")


if __name__ == "__main__":
    main()
