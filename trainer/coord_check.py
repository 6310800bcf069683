"""Coordinate check: does each layer's activation scale stay put as the model widens?

The test of Tensor Programs V (and the `mup` package's plots): train one model per width for a
few Adam steps at one LR on the same batch, and record the mean |x| of every layer's output at
each step (step 0 is the initial network). Under muP the hidden layers' scales are flat in
width at every step; under SP they grow, since Adam moves a hidden weight by about η per entry
whatever its fan-in, so the update's effect grows with width. The verdict per layer is the
slope of log(scale) against log(width) at the last step: width^s.

The tokens are random (a fixed seed, vocabulary of the data config): the check measures how
activations scale with width, which needs no real text, and it then runs anywhere in seconds.

    python -m trainer.coord_check model=small --widths 64,128,256,512,1024 --out coord_check/
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

FLAT_SLOPE = 0.15
"""|s| below this is flat: a 1.4× change over 8× width (what one seed's noise allows at the
widths a CPU check uses). A layer whose update is width-dependent moves by width^0.5 or more."""


@dataclass(frozen=True)
class CoordCheck:
    """Mean |coordinate| of each layer's output, per width and per step.

    `scales[width][layer][step]`; layers are `embed`, `block0`…, `logits`.
    """

    scales: dict[int, dict[str, list[float]]]

    @property
    def widths(self) -> list[int]:
        return sorted(self.scales)

    @property
    def layers(self) -> list[str]:
        return list(self.scales[self.widths[0]])

    @property
    def num_steps(self) -> int:
        return len(self.scales[self.widths[0]]["embed"]) - 1

    def growth(self, layer: str, step: int) -> float:
        """Scale at the largest width over scale at the smallest, for one layer and step."""
        return self.scales[self.widths[-1]][layer][step] / self.scales[self.widths[0]][layer][step]

    def slope(self, layer: str, step: int) -> float:
        """s in scale ∝ width^s: least squares of log scale on log width."""
        x = np.log(self.widths)
        y = np.log([self.scales[w][layer][step] for w in self.widths])
        return float(np.polyfit(x, y, 1)[0])


def verdict(slope: float) -> str:
    """`flat`, `grows` or `shrinks` for a log-log slope."""
    if abs(slope) < FLAT_SLOPE:
        return "flat"
    return "grows" if slope > 0 else "shrinks"


def coord_check(model_cfg, widths: list[int], *, lr: float = 3e-3, num_steps: int = 4,
                vocab_size: int = 256, batch_size: int = 8, seq_len: int = 64,
                seed: int = 0) -> CoordCheck:
    """Train one model per width for `num_steps` Adam steps on one random batch and record the
    mean |x| of every layer's output at each step; callable on any `ModelConfig`."""
    import torch

    from trainer.config import OptimConfig
    from trainer.model import GPT, GPTShape
    from trainer.mup import build_optimizer, set_lr

    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=gen)
    scales = {}
    for width in widths:
        torch.manual_seed(seed)
        model = GPT(GPTShape(replace(model_cfg, width=width), vocab_size))
        optimizer = build_optimizer(model, OptimConfig(lr=lr), weight_decay=0.0)
        set_lr(optimizer, lr)
        scales[width] = _record_steps(model, optimizer, tokens, num_steps)
    return CoordCheck(scales)


def _record_steps(model, optimizer, tokens, num_steps: int) -> dict[str, list[float]]:
    import torch.nn.functional as F

    record: dict[str, list[float]] = {}

    def hook(name):
        def fn(_module, _inputs, output):
            record.setdefault(name, []).append(output.detach().abs().mean().item())
        return fn

    handles = [model.embed.register_forward_hook(hook("embed"))]
    handles += [b.register_forward_hook(hook(f"block{i}")) for i, b in enumerate(model.blocks)]
    logits_scale = []
    for _ in range(num_steps + 1):
        logits = model(tokens[:, :-1])  # (B, T, vocab)
        logits_scale.append(logits.detach().abs().mean().item())
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for h in handles:
        h.remove()
    record["logits"] = logits_scale
    return record


def report_lines(param: str, check: CoordCheck) -> list[str]:
    """One line per layer: its slope at the last step and the verdict."""
    last = check.num_steps
    lines = []
    for layer in check.layers:
        s = check.slope(layer, last)
        lines.append(f"{param:<4} {layer:<8} width^{s:+.2f} at step {last} "
                     f"(step 0: width^{check.slope(layer, 0):+.2f})  {verdict(s)}")
    return lines


def shown_layers(layers: list[str]) -> list[str]:
    """embed, the first, middle and last block, logits: a deep model stays one row."""
    blocks = [name for name in layers if name.startswith("block")]
    picked = sorted({0, len(blocks) // 2, len(blocks) - 1}) if blocks else []
    return ["embed", *[blocks[i] for i in picked], "logits"]


def log_axes(ax, widths: list[int]) -> None:
    """Log-log axes with a tick at each width. The y axis keeps its minor ticks: a panel whose
    values stay within one decade (a flat muP layer) has no power of ten on it, and matplotlib
    labels the minor ticks then."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())


def save_figure(checks: dict[str, CoordCheck], path: Path) -> Path:
    """One row per parametrization, one panel per layer: mean |x| against width, a line per
    step, log-log axes."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (a font cache without matplotlib's own fonts: "findfont: ..." per glyph set, harmless)
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    first = next(iter(checks.values()))
    layers = shown_layers(first.layers)
    fig, axes = plt.subplots(len(checks), len(layers), squeeze=False, sharex=True,
                             figsize=(3.0 * len(layers), 2.9 * len(checks)))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, first.num_steps + 1))
    for row, (param, check) in enumerate(checks.items()):
        for ax, layer in zip(axes[row], layers, strict=True):
            for step in range(check.num_steps + 1):
                ax.plot(check.widths, [check.scales[w][layer][step] for w in check.widths],
                        marker="o", ms=3, color=colors[step], label=f"step {step}")
            log_axes(ax, check.widths)
            s = check.slope(layer, check.num_steps)
            ax.set_title(f"{param}: {layer}  (width^{s:+.2f})", fontsize=10)
            ax.tick_params(which="both", labelsize=9)
        axes[row][0].set_ylabel("mean |activation|", fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel("width", fontsize=10)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.coord_check",
        description="Coordinate check of the model config: activation scale against width, "
                    "muP and SP. Positional arguments are Hydra overrides (model=small ...).")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=small")
    parser.add_argument("--widths", default="64,128,256,512,1024",
                        help="comma-separated widths (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=4, help="Adam steps (default: 4)")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="base LR η (default: 3e-3, as docs/science.md measured; at 1e-2 "
                        "the tiny proxy is past its stable range and muP's hidden layers "
                        "appear to shrink with width)")
    parser.add_argument("--param", choices=("both", "mup", "sp"), default="both")
    parser.add_argument("--out", default="coord_check",
                        help="directory for coord_check.png and coord_check.json")
    return parser.parse_args(argv)


def _widths(text: str, head_dim: int) -> list[int]:
    from trainer.errors import ConfigError

    try:
        given = [int(w) for w in text.split(",") if w.strip()]
        widths = sorted(set(given))
    except ValueError:
        raise ConfigError(f"--widths={text!r} must be comma-separated integers, e.g. "
                          "--widths 64,128,256") from None
    bad = [w for w in widths if w < 1 or w % head_dim]
    if len(widths) < 2 and len(given) >= 2 and not bad:  # (64,64: valid, and one width)
        raise ConfigError(f"--widths {text!r} gives one width twice: the check compares 2 or "
                          f"more different widths, e.g. --widths {widths[0]},{widths[0] * 2}")
    if len(widths) < 2 or bad:
        raise ConfigError(f"--widths needs 2 or more positive multiples of model.head_dim="
                          f"{head_dim} (got {text!r}); e.g. --widths "
                          f"{head_dim * 4},{head_dim * 8},{head_dim * 16}")
    return widths


def main(argv: list[str] | None = None) -> int:
    """Run the check, print a verdict per layer, write the figure and JSON; 2 on user error."""
    from trainer.compose import compose
    from trainer.config import Param
    from trainer.errors import ConfigError
    from trainer.paths import folder_problem
    from trainer.validation import model_problems

    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = compose(args.overrides)
        found = model_problems(cfg.model)
        if found:  # (a zero base width or a NaN multiplier: refused as a run refuses them)
            raise ConfigError(found)
        widths = _widths(args.widths, cfg.model.head_dim)
        if args.steps < 1:
            raise ConfigError(f"--steps {args.steps}: give a whole number of Adam steps >= 1")
        if not 0 < args.lr < math.inf:
            raise ConfigError(f"--lr {args.lr}: give a finite learning rate > 0")
        if reason := folder_problem(args.out):  # (before the models train, not after)
            raise ConfigError(f"--out {args.out}: {reason}; give a folder for "
                              "coord_check.png and coord_check.json")
    except ConfigError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    ignored = [o for o in args.overrides
               if o.partition("=")[0].lstrip("+") in ("model.width", "model.param")]
    for override in ignored:
        what = ("it builds every width of --widths" if override.startswith("model.width")
                else "it builds the parametrizations of --param (both by default)")
        print(f"note: {override} is not read by the check: {what}", file=sys.stderr)
    params = ("mup", "sp") if args.param == "both" else (args.param,)
    checks = {p: coord_check(replace(cfg.model, param=Param(p)), widths, lr=args.lr,
                             num_steps=args.steps) for p in params}
    out = Path(args.out)
    for param, check in checks.items():
        print("\n".join(report_lines(param, check)))
    figure = save_figure(checks, out / "coord_check.png")
    doc = {p: {"widths": c.widths, "lr": args.lr,
               "slopes": {layer: [c.slope(layer, s) for s in range(c.num_steps + 1)]
                          for layer in c.layers},
               "scales": {str(w): c.scales[w] for w in c.widths}} for p, c in checks.items()}
    (out / "coord_check.json").write_text(json.dumps(doc, indent=2))
    print(f"figure: {figure}\ndata:   {out / 'coord_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
