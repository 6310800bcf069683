"""PNG plots of a fit: loss against LR per slice, and each law on log axes with its band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_SLICES = 16


def save_plots(result, out_dir: str | Path) -> list[Path]:
    """Write every plot of a `FitResult` under out_dir; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if not result.optima.empty:
        paths.append(_save(plt, _slices_figure(plt, result), out / "lr_slices.png"))
    for name, law in result.laws.items():
        fig = _loss_figure(plt, law) if name == "loss" else _law_figure(plt, law)
        paths.append(_save(plt, fig, out / f"law_{name}.png"))
    return paths


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _slices_figure(plt, result):
    runs, optima = result.runs, result.optima.head(MAX_SLICES)
    keys = list(runs.slice_keys)
    cols = min(4, len(optima))
    rows = -(-len(optima) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    usable = runs.usable
    for ax, (_, opt) in zip(axes.flat, optima.iterrows(), strict=False):
        mask = np.ones(len(usable), bool)
        for k in keys:
            mask &= (usable[k] == opt[k]).to_numpy()
        group = usable[mask]
        ok = group["status"] == "finished"
        ax.scatter(group.loc[ok, "lr"], group.loc[ok, "loss"], s=12, color="C0")
        top = group.loc[ok, "loss"].max() if ok.any() else 1.0
        ax.scatter(group.loc[~ok, "lr"], np.full((~ok).sum(), top), marker="x", color="C3",
                   label="diverged")
        if opt["coef"] is not None:
            x = np.linspace(*np.log10(opt["window"]), 50)
            ax.plot(10 ** x, np.polyval(opt["coef"], x), color="C1")
        if np.isfinite(opt["lr_opt"]):
            ax.scatter([opt["lr_opt"]], [opt["loss_opt"]], marker="*", s=80, color="C2")
        ax.set_xscale("log")
        label = ", ".join(f"{k}={_short(opt[k])}" for k in keys)
        ax.set_title(label + (f" [{opt['edge']}]" if opt["edge"] else ""), fontsize=7)
    for ax in axes.flat[len(optima):]:
        ax.axis("off")
    fig.supxlabel("learning rate")
    fig.supylabel("final eval loss")
    return fig


def _law_figure(plt, law):
    # One panel per axis: the target with the other axes' factors divided out.
    axes_names = law.axes
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4.2 * len(axes_names), 3.4),
                             squeeze=False)
    pts = law.points
    for i, (ax, name) in enumerate(zip(axes.flat, axes_names, strict=True)):
        others = [j for j in range(len(axes_names)) if j != i]
        log_other = sum(law.log_coef[j + 1] * np.log10(pts[axes_names[j]]) for j in others)
        y = 10 ** (np.log10(pts[law.target]) - log_other)
        x = pts[name].to_numpy(float)
        grid = np.geomspace(x.min(), x.max(), 50)
        # band at the other axes' mean (in log), shown with their fitted factors divided out
        means = {j: np.log10(pts[axes_names[j]]).mean() for j in others}
        shift = sum((law.boot[:, j + 1] - law.log_coef[j + 1]) * m for j, m in means.items())
        pred = law.boot[:, [0, i + 1]] @ np.vstack([np.ones(50), np.log10(grid)])
        pred = pred + np.asarray(shift).reshape(-1, 1)
        lo, hi = np.quantile(pred, [(1 - law.ci_level) / 2, (1 + law.ci_level) / 2], axis=0)
        ax.fill_between(grid, 10 ** lo, 10 ** hi, alpha=0.25, color="C0",
                        label=f"{law.ci_level:.0%} band")
        ax.plot(grid, 10 ** (law.log_coef[0] + law.log_coef[i + 1] * np.log10(grid)),
                color="C0", label=f"fit, exponent {law.log_coef[i + 1]:.3f}")
        ax.scatter(x, y, color="k", s=14, label="optima")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(law.target + (" / other factors" if others else ""), fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"{law.name}: {law.form}", fontsize=9)
    return fig


def _loss_figure(plt, law):
    from fitter.loss_law import log_loss

    fig, ax = plt.subplots(figsize=(5.5, 4))
    pts = law.points
    sizes = np.unique(pts["N"])
    shown = sizes[np.linspace(0, len(sizes) - 1, min(8, len(sizes))).astype(int)]
    cmap = plt.get_cmap("viridis")
    grid = np.geomspace(pts["D"].min(), pts["D"].max(), 60)
    ax.scatter(pts["D"], pts["loss"], c=np.log10(pts["N"]), s=8, cmap=cmap)
    span = np.log10(sizes[-1] / sizes[0]) or 1.0
    for n in shown:
        color = cmap(np.log10(n / sizes[0]) / span)
        log_n = np.full_like(grid, np.log(n))
        preds = np.exp([log_loss(t, log_n, np.log(grid)) for t in law.boot])
        lo, hi = np.quantile(preds, [(1 - law.ci_level) / 2, (1 + law.ci_level) / 2], axis=0)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.2)
        ax.plot(grid, np.exp(log_loss(law.theta, log_n, np.log(grid))), color=color,
                label=f"N={n:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("D (tokens)")
    ax.set_ylabel("loss")
    c = law.coef
    ax.set_title(f"L = {c['E']:.3g} + {c['A']:.3g}/N^{c['alpha']:.3f} + "
                 f"{c['B']:.3g}/D^{c['beta']:.3f}", fontsize=9)
    ax.legend(fontsize=6)
    return fig


def _short(value) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)
