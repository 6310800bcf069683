"""Claim: the critical batch size grows with the data budget D, as a power of D, and hardly with
model size (Zhang et al. 2024; Power Lines, Bergsma et al. 2025, find the same).

Works in the directory of benchmarks/science/power_scheduler.py and reads its WSD grid (4 batch
sizes × 3 budgets × 5 LRs, the train loss logged every 4 steps), launched again here through
`sweep` (which trains nothing that is done), then `sweep fit --law cbs`. For each budget the
fitter takes as target the worst of the per-batch best losses, counts the fewest optimizer
steps any LR needed to reach it at each batch size, S(B), fits S = S_min + E_min/B and reports
B_crit = 0.2·E_min/S_min (20% more tokens than perfect linear scaling), then
B_crit = c·D^p across budgets (`fitter.cbs`).

    python benchmarks/science/critical_batch.py [--out DIR] [--docs DIR]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    arguments,
    figure_style,
    fit,
    launch,
    publish,
    runs_of,
    save,
)

CLAIM = "critical_batch"
SPEC = ROOT / "sweeps" / "science" / "wsd_lr_batch_tokens.yaml"
SWEEP = "wsd_lr_batch_tokens"
SEQ_LEN = 128
PUBLISHED = "B_crit grows as a power of D; at fixed D it hardly depends on N (Zhang et al. 2024)"


def steps_per_batch(runs) -> list[dict]:
    """Per budget: the target loss and, per batch size, the fewest steps to reach it."""
    from fitter.cbs import cbs_points, group_keys, smoothed, steps_to_target

    finished = runs.finished[runs.finished["run"].isin(runs.histories.keys())]
    rows = []
    for d, group in finished.groupby("D"):
        best = {r: float(smoothed(runs.histories[r][:, 1]).min()) for r in group["run"]}
        target = group.assign(best=group["run"].map(best)).groupby("B")["best"].min().max()
        steps = {}
        for b, runs_b in group.groupby("B"):
            reached = [steps_to_target(runs.histories[r], target) for r in runs_b["run"]]
            reached = [s for s in reached if s == s]
            steps[int(b) // SEQ_LEN] = min(reached) if reached else None
        rows.append({"D": float(d), "target_loss": float(target), "steps": steps})
    fitted = cbs_points(finished, runs.histories, group_keys(runs.slice_keys))
    for row in rows:
        mine = fitted[fitted["D"] == row["D"]]
        if not mine.empty:
            row.update({k: float(mine[k].iloc[0]) for k in
                        ("S_min", "E_min", "B_noise", "B_crit", "B_crit_empirical")})
    return rows


def steps_figure(rows: list[dict], path: Path) -> Path:
    """Steps to the target loss against batch size per budget, with the fitted hyperbola."""
    import numpy as np

    from fitter.plot_style import palette, readable_log_axis

    plt = figure_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row, color in zip(rows, palette(len(rows)), strict=True):
        batch = sorted(b for b, s in row["steps"].items() if s is not None)
        ax.plot(batch, [row["steps"][b] for b in batch], "o", color=color,
                label=f"D = {row['D'] / 2**20:g}M tokens, target {row['target_loss']:.3f}")
        if "S_min" in row:
            grid = np.geomspace(min(batch) / 1.5, max(batch) * 1.5, 50)
            ax.plot(grid, row["S_min"] + row["E_min"] / (grid * SEQ_LEN), "-", color=color,
                    lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    readable_log_axis(ax.yaxis, [s for row in rows for s in row["steps"].values() if s])
    ax.set_xlabel("batch size (sequences of 128 tokens)")
    ax.set_ylabel("optimizer steps to the target loss")
    ax.set_title("Steps to target against batch (lines: S = S_min + E_min/B)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    args = arguments(CLAIM, __doc__, workdir="power_scheduler")
    out = Path(args.out)
    launch(out, SPEC)
    try:
        doc = fit(out, SWEEP, "--law", "cbs", subdir="fit_cbs")
    except subprocess.CalledProcessError:  # no law: fit what there is, report why
        doc = fit(out, SWEEP, subdir="fit_cbs")
    rows = steps_per_batch(runs_of(out, SWEEP, histories=True))
    plots = out / "fit_cbs" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    figure = steps_figure(rows, plots / "steps_vs_batch.png")
    law = doc["laws"].get("cbs")
    result = {"claim": CLAIM, "published": PUBLISHED, "per_budget": rows,
              "skipped": doc["skipped"].get("cbs"),
              "law": law and {"form": law["form"], "p": law["coef"]["p"],
                              "p_interval": law["ci"]["p"], "c": law["coef"]["c"],
                              "ci_level": law["ci_level"], "n_points": law["n_points"]}}
    path = save(out, CLAIM, result)
    publish(args.docs, CLAIM, path, {"steps_vs_batch": figure, "law": plots / "law_cbs.png"})


if __name__ == "__main__":
    main()
