"""Claim: the best AdamW timescale τ = B/(η·λ·D) falls as a power law in tokens per parameter
D/N (Power Lines, Bergsma et al. 2025), rather than staying constant (Wang & Aitchison 2024).

Launches sweeps/science/timescale.yaml through `sweep` (τ × LR × width × budget; the sweep sets
`optim.timescale`, so λ follows each run's LR) and fits it with `sweep fit`: each (width, D, τ)
slice gets its LR optimum, each (N, D) its τ_opt (vertex of a parabola through the slices'
losses in log τ, `fitter.laws.timescale_points`), and the timescale law τ_opt = c·(D/N)^m.
Reports τ_opt per D/N, m with its interval, and whether the two settings with nearly equal D/N
(width 32 at 262k tokens, 8.0; width 64 at 1M, 9.1) agree, as a law in D/N alone says they
should.

    python benchmarks/science/timescale.py [--out DIR] [--extend-rounds N] [--docs DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, arguments, figure_style, publish, run_claim, save  # noqa: E402

CLAIM = "timescale"
SPEC = ROOT / "sweeps" / "science" / "timescale.yaml"


def optima_frame(doc: dict) -> pd.DataFrame:
    """fit.json's slices as a frame, τ as a number."""
    frame = pd.DataFrame(doc["slices"])
    return frame.assign(tau=frame["tau"].astype(float))


def timescale_optima(slices: pd.DataFrame) -> list[dict]:
    """Per (N, D): D/N, τ_opt (or the best τ tried, with its edge) and the loss at each τ."""
    from fitter.laws import timescale_points

    points = timescale_points(slices)
    rows = []
    for _, p in points.sort_values("D/N").iterrows():
        mine = slices[(slices["N"] == p["N"]) & (slices["D"] == p["D"])]
        per_tau = {f"{t:g}": (None if pd.isna(loss) else float(loss)) for t, loss in
                   zip(mine["tau"], mine["loss_opt"], strict=True)}
        rows.append({"width": int(float(mine["model.width"].iloc[0])), "N": float(p["N"]),
                     "D": float(p["D"]), "D/N": float(p["D/N"]), "tau_opt": float(p["tau_opt"]),
                     "edge": None if pd.isna(p["edge"]) else p["edge"], "loss_at_tau": per_tau,
                     "lr_opt_at_tau": {f"{t:g}": lr for t, lr in
                                       zip(mine["tau"], mine["lr_opt"], strict=True)}})
    return rows


def loss_vs_tau_figure(slices: pd.DataFrame, rows: list[dict], path: Path) -> Path:
    """Loss at each slice's LR optimum against τ, one curve per (width, D), τ_opt marked."""
    from fitter.plot_style import palette, value_ticks

    plt = figure_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row, color in zip(rows, palette(len(rows)), strict=True):
        mine = slices[(slices["N"] == row["N"]) & (slices["D"] == row["D"])].sort_values("tau")
        # each curve relative to its own best: the settings differ by far more than τ moves
        ax.plot(mine["tau"], mine["loss_opt"] - mine["loss_opt"].min(), "o-", color=color,
                label=f"D/N = {row['D/N']:.3g} (width {row['width']}, {row['D'] / 2**20:g}M tok)")
        if row["edge"] is None:
            ax.axvline(row["tau_opt"], color=color, ls=":", lw=1)
    ax.set_xscale("log")
    value_ticks(ax.xaxis, slices["tau"])
    ax.set_xlabel("timescale τ = B/(η·λ·D) (fraction of training)")
    ax.set_ylabel("eval loss above the best τ (nats per byte)")
    ax.set_title("Loss against the AdamW timescale (dotted: τ_opt where bracketed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarise(doc: dict, rows: list[dict]) -> dict:
    """τ_opt per D/N, the law's exponent, and the equal-D/N check."""
    law = doc["laws"].get("timescale")
    fitted = None if law is None else {
        "form": law["form"], "m": law["coef"]["m"], "m_interval": law["ci"]["m"],
        "c": law["coef"]["c"], "ci_level": law["ci_level"], "n_points": law["n_points"]}
    # settings of different widths whose D/N lie within 1.25x: a law in D/N alone gives them
    # the same τ_opt
    equal_dn = [{"D/N": [a["D/N"], b["D/N"]], "width": [a["width"], b["width"]],
                 "tau_opt": [a["tau_opt"], b["tau_opt"]], "edge": [a["edge"], b["edge"]]}
                for i, a in enumerate(rows) for b in rows[i + 1:]
                if a["width"] != b["width"] and max(a["D/N"], b["D/N"]) / min(a["D/N"], b["D/N"])
                < 1.25]
    return {"claim": CLAIM, "per_setting": rows, "law": fitted,
            "skipped": doc["skipped"].get("timescale"), "equal_D_over_N": equal_dn,
            "next_grid_left": doc["next_grid"]}


def main() -> None:
    args = arguments(CLAIM, __doc__)
    out = Path(args.out)
    doc = run_claim(out, SPEC, extend_rounds=args.extend_rounds)
    slices = optima_frame(doc)
    rows = timescale_optima(slices)
    plots = out / "fit" / "plots"
    figure = loss_vs_tau_figure(slices, rows, plots / "loss_vs_tau.png")
    path = save(out, CLAIM, summarise(doc, rows))
    publish(args.docs, CLAIM, path, {"loss_vs_tau": figure, "law": plots / "law_timescale.png"})


if __name__ == "__main__":
    main()
