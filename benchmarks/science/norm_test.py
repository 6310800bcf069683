"""Claim: a batch that grows when the norm test fails (Lau et al. 2024) reaches the loss of the
best fixed batch at equal tokens in fewer optimizer steps.

Works in the directory of benchmarks/science/power_scheduler.py, whose WSD grid holds the
fixed-batch baseline: the 1M-token runs at batch 8, 16, 32 and 64 sequences, 5 LRs each (launched
again here through `sweep`, which trains nothing that is done). Then launches
sweeps/science/norm_test.yaml (start at 8 sequences, grow up to 64 when the test fails, the
test's η × 3 LRs, 1M tokens) and fits it with `sweep fit` (its LR optimum per η).

At equal tokens it compares the best run of each norm-test η (lowest final loss over the LRs)
with the best fixed batch (lowest final loss over batch sizes and LRs): final eval loss,
optimizer steps, tokens actually trained (a growing batch stops when the next one no longer
fits the budget), and the batch it ended with.

    python benchmarks/science/norm_test.py [--out DIR] [--docs DIR]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    arguments,
    figure_style,
    fit,
    launch,
    metric_history,
    publish,
    save,
    trial_frame,
)

CLAIM = "norm_test"
SPEC = ROOT / "sweeps" / "science" / "norm_test.yaml"
FIXED_SPEC = ROOT / "sweeps" / "science" / "wsd_lr_batch_tokens.yaml"
TOKENS = 1_048_576
SEQ_LEN = 128


def finished_runs(out: Path, name: str) -> list[dict]:
    """Finished trials of a sweep: LR, batch, η, final loss, steps, tokens, final batch."""
    frame = trial_frame(out, name)
    rows = []
    for _, r in frame.iterrows():
        loss = r.get("metrics.final/eval_loss")
        if r.get("tags.trial.status") != "finished" or loss is None or not math.isfinite(loss):
            continue
        final_batch = r.get("metrics.final/batch_tokens")
        start = int(float(r["params.train.batch_size"]))
        rows.append({"run": r["run_id"], "lr": float(r["params.optim.lr"]),
                     "tokens_budget": int(float(r["params.train.tokens"])),
                     "batch_size": start,
                     "eta": _number(r.get("params.train.norm_test_eta")),
                     "schedule": r.get("params.train.batch_schedule"),
                     "loss": float(loss), "steps": int(r["metrics.final/steps"]),
                     "tokens": int(r["metrics.final/tokens"]),
                     "final_batch_size": start if final_batch is None or math.isnan(final_batch)
                     else int(final_batch) // SEQ_LEN})
    return rows


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def best_by(rows: list[dict], key: str) -> dict:
    """Per value of `key`, the run with the lowest final loss (the tuned LR)."""
    best: dict = {}
    for row in rows:
        if row[key] not in best or row["loss"] < best[row[key]]["loss"]:
            best[row[key]] = row
    return dict(sorted(best.items()))


def loss_vs_steps_figure(fixed: dict, adaptive: dict, path: Path) -> Path:
    """Final loss against optimizer steps at 1M tokens: fixed batches and norm-test runs."""
    plt = figure_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([r["steps"] for r in fixed.values()], [r["loss"] for r in fixed.values()], "o-",
            color="tab:blue", label="fixed batch (best LR each)")
    for r in fixed.values():
        ax.annotate(f"{r['batch_size']} seq", (r["steps"], r["loss"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=9)
    for (eta, r), marker in zip(adaptive.items(), "s^Dv", strict=False):
        ax.plot(r["steps"], r["loss"], marker, color="tab:red", ms=8,
                label=f"norm test η = {eta:g} (8 → {r['final_batch_size']} seq)")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log", base=2)
    # powers of two only: the runs' own step counts (256 and 265) would collide
    steps = [r["steps"] for r in [*fixed.values(), *adaptive.values()]]
    ticks = [2.0 ** k for k in range(int(math.log2(min(steps))), int(math.log2(max(steps))) + 2)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(ticks[0] / 1.1, max(steps) * 1.3)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("final eval loss (nats per byte)")
    ax.set_title(f"Adaptive against fixed batch at {TOKENS / 2**20:g}M tokens, tuned LRs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def batch_figure(out: Path, adaptive: dict, path: Path) -> Path:
    """The batch size the norm test chose, against tokens seen, for each η's best run."""
    plt = figure_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for eta, r in adaptive.items():
        batch = dict(metric_history(out, r["run"], "train/batch_tokens"))
        tokens = dict(metric_history(out, r["run"], "train/tokens"))
        steps = sorted(set(batch) & set(tokens))
        ax.step([tokens[s] / 2**20 for s in steps], [batch[s] / SEQ_LEN for s in steps],
                where="post", label=f"η = {eta:g}, LR {r['lr']:g}")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("tokens seen (millions, 2^20)")
    ax.set_ylabel("batch size (sequences of 128)")
    ax.set_title("Batch size grown by the norm test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    args = arguments(CLAIM, __doc__, workdir="power_scheduler")
    out = Path(args.out)
    launch(out, FIXED_SPEC)
    launch(out, SPEC)
    doc = fit(out, "norm_test", subdir="fit_norm_test")
    fixed = best_by([r for r in finished_runs(out, "wsd_lr_batch_tokens")
                     if r["tokens_budget"] == TOKENS], "batch_size")
    adaptive = best_by(finished_runs(out, "norm_test"), "eta")
    best_fixed = min(fixed.values(), key=lambda r: r["loss"])
    compare = {f"{eta:g}": {**r, "loss_vs_best_fixed_pct": 100 * (r["loss"] / best_fixed["loss"]
                                                                   - 1),
                            "steps_vs_best_fixed": r["steps"] / best_fixed["steps"]}
               for eta, r in adaptive.items()}
    plots = out / "fit_norm_test" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    figures = {"loss_vs_steps": loss_vs_steps_figure(fixed, adaptive,
                                                     plots / "loss_vs_steps.png"),
               "batch": batch_figure(out, adaptive, plots / "batch_vs_tokens.png")}
    result = {"claim": CLAIM, "tokens": TOKENS, "fixed_best_per_batch": list(fixed.values()),
              "best_fixed": best_fixed, "norm_test_best_per_eta": compare,
              "norm_test_all": finished_runs(out, "norm_test"),
              "lr_slices": doc["slices"]}
    path = save(out, CLAIM, result)
    publish(args.docs, CLAIM, path, figures)


if __name__ == "__main__":
    main()
