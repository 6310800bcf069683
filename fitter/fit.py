"""All laws of one sweep, and the fit.json that records them.

`fit_runs` turns a `Runs` table into slice optima and every law the data supports, once per
group of the categorical keys that are not axes of the laws (`fitter.groups`: muP and SP runs
get separate laws). Asked for one law, it raises that law's `FitError` when no group gives it;
asked for all, it records why each missing law was skipped and raises only when nothing at all
could be fitted.

fit.json (docs/design.md) keeps one entry per law under `laws`. With one group the key is the law's
name (`lr`), as it always was; with several it is `LAW[GROUP]`, e.g. `lr[model.param=mup]` and
`lr[model.param=sp]`, and `skipped` is keyed the same way. Every law's entry also says `law`
(its name) and `group` (key → value, `{}` when ungrouped); the document lists `group_keys`,
`groups` (labels) and `pooled` (true after `sweep fit --pool`, which fits one law across
groups). The lr law's exponents are named after their axes, `a_N`, `a_D`, `a_B`, so the law
reads `lr_opt = c * N^a_N * D^a_D`.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fitter import groups as grouping
from fitter.cbs import cbs_law
from fitter.cbs import group_keys as cbs_group_keys
from fitter.data import AXES, BATCH_SCHEDULE_KEY, PARAM_KEY, Runs, require, slice_column
from fitter.errors import FitError
from fitter.laws import AXIS_KEYS, batch_law, lr_law, timescale_law
from fitter.loss_law import OUTLIER_SIGMAS, fit_loss_law
from fitter.powerlaw import with_interval
from fitter.slices import lr_optima, next_grid

LAWS = ("loss", "lr", "timescale", "batch", "cbs")
SLICE_LAWS = ("lr", "timescale", "batch")


@dataclass
class FitResult:
    """Slice optima and fitted laws of one sweep, keyed as in fit.json (`lr`, `lr[GROUP]`)."""

    runs: Runs
    optima: pd.DataFrame
    laws: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)
    """fit.json key (of a law or a skipped law) → its group."""
    group_keys: tuple[str, ...] = ()
    pooled: bool = False

    @property
    def group_list(self) -> list[dict[str, str]]:
        """The distinct groups, in order."""
        out: list[dict[str, str]] = []
        for group in self.groups.values():
            if group not in out:
                out.append(group)
        return out or [{}]

    def laws_of(self, group: dict[str, str]) -> tuple[dict, dict[str, str]]:
        """(law name → law, law name → reason skipped) of one group."""
        laws = {law_name(k): v for k, v in self.laws.items() if self.groups.get(k) == group}
        skipped = {law_name(k): v for k, v in self.skipped.items()
                   if self.groups.get(k, group) == group}
        return laws, skipped


def law_name(key: str) -> str:
    """`lr` from `lr[model.param=mup]`."""
    return key.split("[", 1)[0]


LAW_BOOT, SLICE_BOOT = 500, 200
"""Bootstrap resamples when none are asked for: per law, and per slice optimum and for the
loss law (each resample refits every slice's parabola, or the loss law's four parameters)."""


def fit_runs(runs: Runs, *, laws: tuple[str, ...] | None = None, n_boot: int | None = None,
             seed: int = 0, pool: bool = False, group: dict[str, str] | None = None
             ) -> FitResult:
    """Slice optima and the requested laws (all that the data supports when laws is None).

    Args:
        runs: the sweep's runs.
        laws: the laws to fit; None for every law the runs support.
        n_boot: bootstrap resamples per law, per slice optimum and for the loss law; None
            for `LAW_BOOT` per law and `SLICE_BOOT` for the others.
        seed: seed of the bootstraps.
        pool: fit one law across groups (each (N, D, B) takes its best slice of any group).
        group: fit only this group (key → value), e.g. {"model.param": "mup"}.

    Raises:
        FitError: an unknown law or group; a requested law that no group can fit; no law at all.
    """
    wanted = LAWS if laws is None else laws
    unknown = [law for law in wanted if law not in LAWS]
    if unknown:
        raise FitError(f"unknown law {unknown[0]!r}; choose one of {', '.join(LAWS)}.")
    require(runs, ("loss",), law=wanted[0])
    if group:
        runs = grouping.select(runs, group)
    keys = grouping.group_keys(runs)
    pool = pool and bool(keys)  # (nothing to pool where no key splits the runs)
    # (pooled, the lr law's points say which group each came from: `lr_law`'s `carry`)
    carry, keys = (keys, ()) if pool else ((), keys)
    parts = grouping.split(runs, keys)
    grouped = len(parts) > 1
    result = FitResult(runs, pd.DataFrame(), group_keys=keys, pooled=pool)
    frames = []
    for values, part in parts:
        optima, fitted, skipped = _fit_group(part, wanted, explicit=laws is not None,
                                             n_boot=n_boot, seed=seed, carry=carry)
        frames.append(optima.assign(**values) if not optima.empty else optima)
        for law, fit in fitted.items():
            key = grouping.law_key(law, values, grouped=grouped)
            result.laws[key], result.groups[key] = fit, values
        for law, reason in skipped.items():
            key = grouping.law_key(law, values, grouped=grouped)
            result.skipped[key], result.groups[key] = reason, values
    result.optima = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(
        not f.empty for f in frames) else pd.DataFrame()
    if laws is not None:
        for law in wanted:
            if not any(law_name(k) == law for k in result.laws):
                key = next(k for k in result.skipped if law_name(k) == law)
                where = grouping.label(result.groups[key])
                raise FitError((f"{where}: " if grouped else "") + result.skipped[key])
    if not result.laws and result.optima.empty:
        raise FitError(next(iter(result.skipped.values())))
    return result


def _fit_group(runs: Runs, wanted: tuple[str, ...], *, explicit: bool, n_boot: int | None,
               seed: int, carry: tuple[str, ...] = ()):
    # optima, fitted laws and skipped laws (name → reason) of one group (`carry`: the group
    # keys of a pooled fit, which the lr law's points keep)
    optima, fitted, skipped = pd.DataFrame(), {}, {}
    if not explicit or any(law in SLICE_LAWS for law in wanted):
        try:
            optima = _optima(runs, wanted[0] if explicit else "lr", n_boot=n_boot, seed=seed)
        except FitError as err:  # said once per law that needs the optima, in its own name
            first = wanted[0] if explicit else "lr"
            skipped.update({law: str(err).replace(f"the {first} law needs",
                                                  f"the {law} law needs", 1)
                            for law in SLICE_LAWS if law in wanted})
    for law in wanted:
        if law in skipped:
            continue
        try:
            fitted[law] = _fit_one(law, runs, optima, n_boot=n_boot, seed=seed, carry=carry)
        except FitError as err:
            skipped[law] = str(err)
    return optima, fitted, skipped


def _optima(runs: Runs, law: str, *, n_boot: int | None, seed: int) -> pd.DataFrame:
    usable = require(runs, ("lr",), law=law)
    return lr_optima(usable, runs.slice_keys, n_boot=SLICE_BOOT if n_boot is None else n_boot,
                     seed=seed)


def _fit_one(law: str, runs: Runs, optima: pd.DataFrame, *, n_boot: int | None, seed: int,
             carry: tuple[str, ...] = ()):
    boot = {"n_boot": LAW_BOOT if n_boot is None else n_boot, "seed": seed}
    if law == "loss":
        ended = require(runs, ("N", "D", "loss"), law="loss")
        # The best loss at each (N, D) over the settings tried, each setting's seeds averaged
        # first (the minimum over seeds would be the luckiest seed's, biased low), and only
        # settings none of whose seeds diverged (the survivors' mean is a lucky one too).
        setting = list(dict.fromkeys(["N", "D", *runs.slice_keys, "lr"]))
        if "wd" in setting and "wd" in ended:  # (a run given τ has a λ per LR: τ names it)
            ended = ended.assign(wd=slice_column(ended, "wd"))
        per = ended.assign(_div=ended["status"] != "finished").groupby(
            setting, as_index=False, dropna=False).agg(loss=("loss", "mean"), _div=("_div", "any"))
        stable = per[~per["_div"]]
        if stable.empty:
            raise FitError("the loss law needs settings whose runs all finished, and every "
                           f"setting in {runs.source} had a run diverge; lower optim.lr.")
        best = stable.loc[stable.groupby(["N", "D"])["loss"].idxmin()]
        # An (N, D) whose best setting's LR is the lowest or highest its slice tried has a
        # best loss that may fall past it: an upper bound, which bent the law (E 1.89 for a
        # true 1.80 with one width's LRs all on one side of its optimum). Left out, and said.
        keys = [k for k in setting if k != "lr"]
        tried = per.groupby(keys, dropna=False)["lr"].agg(["min", "max", "nunique"])
        at = best.set_index(keys).join(tried, how="left")
        # (of 2 LRs the best is always an edge, of 1 always both: such slices, a halving
        # sweep's upper rungs among them, are kept, as they always were)
        edge = (at["nunique"] >= 3) & ((at["lr"] <= at["min"]) | (at["lr"] >= at["max"]))
        left = best[edge.to_numpy()]
        law = fit_loss_law(best[~edge.to_numpy()][["N", "D", "loss"]],
                           n_boot=SLICE_BOOT if n_boot is None else n_boot, seed=seed,
                           left_out=left[["N", "D"]])
        law.left_out = left[["N", "D", "loss"]].to_dict("records")
        # (a table of losses without LRs, e.g. a paper's points, tried no LR it could tell)
        law.few_lrs = int(at["nunique"].between(1, 2).to_numpy()[~edge.to_numpy()].sum())
        return law
    if law == "lr":
        # (an axis some runs give and some lack would leave the law, which reads only the axes
        # every slice gives, fitted along the others without a word: refused, as other laws do)
        require(runs, tuple(a for a in AXES if a in runs.usable and runs.usable[a].notna().any()),
                law="lr")
        return lr_law(optima, carry=carry, **boot)
    needs = {"timescale": ("N", "D", "B", "wd"), "batch": ("N", "D", "B"), "cbs": ("N", "D", "B")}
    require(runs, needs[law], law=law)
    if law in ("batch", "cbs"):
        _refuse_growing_batch(runs, law)
    if law == "timescale":
        return timescale_law(optima, **boot)
    if law == "batch":
        return batch_law(optima, **boot)
    return cbs_law(runs.finished, runs.histories, cbs_group_keys(runs.slice_keys), **boot)


def _refuse_growing_batch(runs: Runs, law: str) -> None:
    """A run whose batch grows (the norm test) records B as the batch it started at: a batch
    law over such runs named a best starting batch as the batch for a big run, and its
    histories' steps are not B tokens each (the cbs law's reading)."""
    if BATCH_SCHEDULE_KEY not in runs.table:
        return
    usable = runs.usable
    grows = usable[BATCH_SCHEDULE_KEY].notna() & (usable[BATCH_SCHEDULE_KEY] != "constant")
    if grows.any():
        kinds = ", ".join(sorted(set(usable.loc[grows, BATCH_SCHEDULE_KEY])))
        raise FitError(f"the {law} law needs runs of a fixed batch, and {int(grows.sum())} of "
                       f"{len(usable)} runs in {runs.source} grow theirs "
                       f"({BATCH_SCHEDULE_KEY}={kinds}: their B is the batch they started at); "
                       "sweep train.batch_size with train.batch_schedule=constant for it.")


def fit_json(result: FitResult, *, sweep: str, next_trials: int | None = None) -> dict:
    """The fit.json document (see docs/design.md): laws, slices, skipped laws and the next grid
    (for a searched sweep: `search.optuna.n_trials=next_trials`, the next search budget)."""
    table = result.runs.table
    optima = result.optima
    doc = {
        "sweep": sweep, "source": result.runs.source,
        "n_runs": len(table), "n_finished": int((table["status"] == "finished").sum()),
        "n_diverged": int((table["status"] == "diverged").sum()),
        # (runs the fit does not use: running, interrupted, failed, pruned)
        "n_other": {str(k): int(v) for k, v in table["status"].value_counts().sort_index()
                    .items() if k not in ("finished", "diverged")},
        # finished runs without a finite final loss (a record cut short): left out, and named
        "no_loss": [str(r) for r in table.loc[(table["status"] == "finished")
                                              & ~np.isfinite(table["loss"]), "run"]],
        "group_keys": list(result.group_keys), "pooled": result.pooled,
        "groups": [grouping.label(g) for g in result.group_list if g],
        "laws": {key: {**law.to_json(), "law": law_name(key), "group": result.groups[key]}
                 for key, law in result.laws.items()},
        "skipped": result.skipped,
        "slices": _slices_json(optima),
        "next_grid": next_grid(optima) if not optima.empty else [],
    }
    if next_trials is not None:
        # A study's LRs are the sampler's (under halving, a rung's are the best of the rung
        # below): new grid values would turn a searched range into a list. More trials probe
        # past a best at the edge of what was tried, or let more LRs climb.
        doc["next_grid"] = [f"search.optuna.n_trials={next_trials}"] if doc["next_grid"] else []
        for row in doc["slices"]:  # (each slice's own hint likewise: extend refuses choice())
            if isinstance(row.get("extend"), str):
                row["extend"] = doc["next_grid"][0]
    return _clean(doc)


def write_fit(result: FitResult, out_dir: str | Path, *, sweep: str,
              next_trials: int | None = None, selection: dict | None = None) -> dict:
    """Write fit.json and plots/*.png under out_dir; the fit.json document (`next_trials`: a
    searched sweep's next n_trials to suggest; `selection`: which runs were fitted, {"group":
    {key: value} of `--group`, "pooled": `--pool`}, recorded as `selection`)."""
    from fitter.plots import save_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = fit_json(result, sweep=sweep, next_trials=next_trials)
    doc["selection"] = selection or {"group": {}, "pooled": False}
    for law in doc["laws"].values():  # `--group model.param=sp`: each law is of that group
        if not law.get("group") and doc["selection"].get("group"):
            law["group"] = dict(doc["selection"]["group"])
    doc["plots"] = [str(p.relative_to(out)) for p in save_plots(result, out / "plots")]
    (out / "fit.json").write_text(json.dumps(doc, indent=2))
    return doc


def _slices_json(optima: pd.DataFrame) -> list[dict]:
    if optima.empty:
        return []
    keep = [c for c in optima.columns if c not in ("coef", "window")]
    rows = optima[keep].to_dict("records")
    for row, window in zip(rows, optima["window"], strict=True):
        row["window"] = list(window)
    return rows


def _clean(value):
    # JSON has no NaN, numpy scalars or tuples
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


STABILITY_LIMITED = (
    "{capped} of its {n} points are at the stability limit (the next LR diverged): there the "
    "loss still fell at the largest stable LR, so the law follows where runs diverge, a lower "
    "bound of the optimum, not where the loss is lowest; a big run at this LR has no margin "
    "below divergence")
"""Said under an lr law (and its recommendation) most of whose points are stability limits."""


def format_fit(doc: dict, *, recorded: bool = True, not_done: int = 0,
               seeds: tuple[int, ...] = (0,)) -> str:
    """Plain-text summary of a fit.json document for the terminal (`recorded`: of a sweep in
    the tracking store, which `sweep extend` can grow; not of a CSV; `not_done`: its trials
    not done yet, whose LRs may be the ones an edge slice lacks; `seeds`: the sweep's, which
    the command that adds one names)."""
    other = "".join(f", {n} {status}" for status, n in doc.get("n_other", {}).items())
    lines = [f"{doc['sweep']}: {doc['n_runs']} runs ({doc['n_finished']} finished, "
             f"{doc['n_diverged']} diverged{other}), {len(doc['slices'])} LR slice"
             + "s" * (len(doc["slices"]) != 1)]
    if missing := doc.get("no_loss"):
        lines.append(f"  {len(missing)} finished run{'s' * (len(missing) != 1)} "
                     f"{'have' if len(missing) != 1 else 'has'} no finite final loss and "
                     f"{'are' if len(missing) != 1 else 'is'} left out ("
                     + ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
                     + "): check "
                     + ("their records" if len(missing) != 1 else "its record"))
    if doc.get("groups"):
        lines.append(f"  laws fitted per group of {', '.join(doc['group_keys'])}: "
                     + "; ".join(doc["groups"]) + " (pool them with --pool)")
    elif doc.get("pooled"):
        lines.append("  laws pooled across groups (--pool)")
    skipped = _skipped(doc["skipped"])
    width = max([10, *(len(k) for k in [*doc["laws"], *skipped])])
    for name, law in doc["laws"].items():
        if law["ci"]:  # (none where too few points: `powerlaw.interval_meaningful`)
            level = f"{law['ci_level']:.0%} CI" + (
                " from the points' own intervals: one residual cannot measure scatter about "
                "the law beyond them" if law.get("interval_source") == "points" else "")
            coefs = ", ".join(f"{k}={with_interval(v, *law['ci'][k], value_digits=4)}"
                              for k, v in law["coef"].items())
        else:
            level = ("no intervals: --n-boot 0" if not law["n_boot"]
                     else "too few points for an interval")
            coefs = ", ".join(f"{k}={v:.4g}" for k, v in law["coef"].items())
        lines.append(f"  {name:<{width}} {law['form']}   ({law['n_points']} points, {level})")
        lines.append(" " * (width + 3) + coefs)
        if (p := law.get("points_misfit_p")) is not None:
            lines.append(" " * (width + 3) + POINTS_MISFIT.format(p=p))
        if law.get("law") == "lr" and law["ci"]:
            for axis, e in (("N", "a_N"), ("D", "a_D"), ("B", "a_B")):
                if e in law["ci"] and law["ci"][e][0] <= 0.0 <= law["ci"][e][1]:
                    lines.append(" " * (width + 3) + f"{e}'s interval holds 0: these optima "
                                 f"do not show the best LR moving with {axis}"
                                 + (" (muP predicts it does not)" if axis == "N" else ""))
        if missing := law.get("unbracketed"):
            lines.append(" " * (width + 3) + f"{missing} (N, D, B) left out: the setting with "
                         "their lowest loss has its best LR at the edge of the LRs tried, so "
                         "their optimum is not known (`next_grid` lists the LRs to add)")
        if capped := law.get("at_stability_limit"):
            lines.append(" " * (width + 3) + STABILITY_LIMITED.format(
                capped=capped, n=law["n_points"]))
        if law.get("law") == "lr" and law["ci"] and _one_seed(doc):
            more = _another_seed(doc, recorded=recorded, seeds=seeds)
            lines.append(" " * (width + 3) + "its points come from one seed: the intervals "
                         "take their scatter about the law as independent noise, while one "
                         "seed's optima move together (one init and data order), so they can "
                         f"be too narrow; a second seed ({more}) shows how far they move")
        for key, counts in (law.get("mixes") or {}).items():
            lines.append(" " * (width + 3) + "its points come from several groups ("
                         + ", ".join(f"{n} of {key}={v}" for v, n in counts.items())
                         + "), the best slice at each point: "
                         + ("muP scales its hidden matrices' LR by base_width/width and SP "
                            "does not, so one law across them mixes two LR rules and its "
                            "exponents hold for neither" if key == PARAM_KEY else
                            "the law's exponents then hold for none of them")
                         + "; fit each group's law (without --pool) to transfer the LR")
        if far := law.get("out_of_reach"):
            lines.append(" " * (width + 3) + f"{far}: to use such points, sweep batch sizes "
                         "around them")
        if name == "cbs" and (near := sum(
                not p["B_lo"] <= p["B_crit"] <= p["B_hi"] for p in law.get("points") or []
                if p.get("B_lo") is not None)):
            lines.append(" " * (width + 3) + f"{near} of its points lie outside the batch sizes "
                         "their sweep tried (within 2x): read off the fitted hyperbola, not "
                         "measured")
        if flat := law.get("not_hyperbola"):
            lines.append(" " * (width + 3) + f"{len(flat)} budget{'s' * (len(flat) != 1)} "
                         f"(D = {', '.join(format(p['D'], '.3g') for p in flat)}) left out: "
                         "steps to the target did not fall as S_min + E_min/B over the batch "
                         "sizes tried (flat in B, or faster than 1/B)")
        if edges := law.get("edges"):
            kinds = {"lr": "the best τ's LR is at the edge of the LRs tried (extend those "
                           "LRs: `next_grid`)",
                     "low": "the best τ is the lowest tried", "high": "the best τ is the "
                     "highest tried", "one": "one τ was tried"} if law.get("law") != "batch" \
                else {"low": "the best batch size is the smallest tried",
                      "high": "the best batch size is the largest tried",
                      "diverged": "the next batch size up diverged at every LR"}
            said = "; ".join(f"{sum(e['edge'] == k for e in edges)} where {text}"
                             for k, text in kinds.items() if any(e["edge"] == k for e in edges))
            fix = law.get("edges_fix")
            lines.append(" " * (width + 3) + f"{len(edges)} setting"
                         f"{'s' * (len(edges) != 1)} left out ({said}): the law is fitted "
                         "without them; " + (f"to fit it on all, {fix}" if fix else
                                             "bracket them to fit it on all"))
        for later, line in (law.get("along") or {}).items():
            lines.append(" " * (width + 3) + f"{later} grows as {line['factor']:.3g}·"
                         f"{line['of']}^{line['power']:.3g} at every point, so the law is "
                         f"along that line: a_{line['of']} holds {later}'s effect too (another "
                         f"{AXIS_KEYS.get(later, later)} at one {AXIS_KEYS.get(line['of'])} "
                         "separates them)")
        points = law.get("points") or []
        edge_wd = sum(p.get("at_timescale") == "edge" for p in points)
        if edge_wd:
            lines.append(" " * (width + 3) + f"{edge_wd} of its points take the LR of a weight "
                         "decay at the edge of those tried (the best λ lies past them, and the "
                         "LR there makes up for it): add weight decays past that edge")
        if law.get("e_at_bound"):
            lines.append(" " * (width + 3) + "E is at its bound (0): these losses show no "
                         "floor, so E and its interval say nothing, and the law's values far "
                         "past the data lean on a floor it did not measure (sweep longer "
                         "budgets or larger widths to see one)")
        if left := law.get("left_out"):
            lines.append(" " * (width + 3) + f"{len(left)} (N, D) left out: their best LR is "
                         "at the edge of the LRs tried, so their best loss may lie lower "
                         "(fit.json: left_out; `next_grid` lists the LRs to add)")
        if few := law.get("few_lrs"):  # (kept: a halving sweep's upper rungs are such)
            lines.append(" " * (width + 3) + f"{few} of its {law['n_points']} points come "
                         "from settings of fewer than 3 LRs, whose best LR is not known to be "
                         "bracketed, so their best loss may lie lower and the law with it "
                         "(fit.json: few_lrs)")
        if far := law.get("outliers"):
            top = far[0]
            lines.append(" " * (width + 3) + f"{len(far)} of {law['n_points']} points lie more "
                         f"than {OUTLIER_SIGMAS:g} robust σ off this law (farthest: "
                         f"N={top['N']:.3g}, D={top['D']:.3g}, loss {top['loss']:.4g} where "
                         f"the law says {top['fitted']:.4g}; fit.json lists them under "
                         "outliers): check them, and refit without any that the law does not "
                         "describe")
    lines += [f"  {name:<{width}} skipped: {reason}" for name, reason in skipped.items()]
    if skipped and not_done:  # (their reasons count the ended trials: the rest may hold it)
        lines.append(f"  {'the' if len(skipped) == 1 else 'these'} skipped law"
                     f"{'s' * (len(skipped) != 1)} count only the ended trials; {not_done} of "
                     "the sweep's trials are not done yet and may hold the values asked for: "
                     f"let them finish (`sweep resume {doc['sweep']}` if its driver stopped) "
                     "and fit again before adding any")
    best = _best_slice(doc)
    if best:
        lines.append(f"  {'LR optimum' if len(doc['slices']) == 1 else 'best slice'}: {best}")
    lines += _each_slice(doc)
    if edge := _best_at_edge(doc):
        lines.append(f"  the best slice is at the {edge}: the best may lie beyond what was "
                     "tried; extend those axes before taking these values")
    edges = [s for s in doc["slices"] if not s.get("conflict")
             and s.get("edge") in ("low", "high", "all_diverged", "single")]
    one = len(edges) == 1
    have = "has" if one else "have"
    kinds = {kind: sum(s.get("edge") in edge for s in edges) for kind, edge in (
        ("at the grid edge", ("low", "high")), ("tried one LR only", ("single",)),
        ("diverged at every LR", ("all_diverged",)))}
    kinds = {kind: n for kind, n in kinds.items() if n}
    where = ("" if not edges else
             f"{have} no LR optimum inside the LRs tried ("
             + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + ")" if len(kinds) > 1
             else f"{have} {'its' if one else 'their'} best LR at the grid edge"
             if "at the grid edge" in kinds else next(iter(kinds)))
    counted = f"{len(edges)} slice{'' if one else 's'}"
    if edges and not_done:
        lines.append(f"  {counted} {where}; {not_done} of the sweep's trials are not done yet "
                     f"and may bracket {'it' if one else 'them'}: let them finish (`sweep "
                     f"resume {doc['sweep']}` if its driver stopped) and fit again before "
                     "extending")
    elif edges and doc["next_grid"][0].startswith("search."):
        lines.append(f"  {counted} {have} no LR optimum inside the LRs "
                     f"{'its' if one else 'their'} study tried; to bracket "
                     f"{'it' if one else 'them'}: sweep extend {shlex.quote(doc['sweep'])} "
                     f"{doc['next_grid'][0]} (or widen a searched range that `sweep status` "
                     "flags)")
    elif edges and recorded:
        added = doc.get("next_grid_trials")
        lines.append(f"  {counted} {where}; to bracket "
                     f"{'it' if one else 'them'}: sweep extend {shlex.quote(doc['sweep'])} "
                     + " ".join(map(shlex.quote, doc["next_grid"]))
                     + (f" (adds {added} trial{'s' * (added != 1)}: every new LR at every "
                        "point of the grid's other axes)" if added else ""))
    elif edges:
        # (a grid adds each value to every slice: 32 LRs where each slice needed its two)
        each = (" (a grid adds every value to every slice; fit.json's slices[].extend gives "
                "each slice's own)" if not one else "")
        lines.append(f"  {counted} {where}; to bracket {'it' if one else 'them'}, add to "
                     f"{'its' if one else 'their'} sweep: " + " ".join(doc["next_grid"]) + each)
    lines += _stability_notes(doc, recorded=recorded)
    # (trials not done yet may be the seeds or LRs these ask for: said instead of the hint)
    wait = (f"; {not_done} of the sweep's trials are not done yet and may hold them: let them "
            f"finish (`sweep resume {doc['sweep']}` if its driver stopped) and fit again "
            "before adding any") if not_done else ""
    # (several seeds of a searched sweep: their losses about one curve, offsets removed)
    one_seed = [s for s in doc["slices"] if s.get("interval_noise") == "fit"
                and (s.get("n_seeds") or 1) == 1]
    if one_seed:
        more = _another_seed(doc, recorded=recorded, seeds=seeds)
        lines.append(f"  the LR intervals of {_which(one_seed, doc['slices'])} come from "
                     "one seed's losses around their fitted curve: they miss how the optimum "
                     "moves between seeds, often by more; for intervals that hold it add a "
                     + (f"seed{wait}" if wait else f"seed ({more})"))
    unmeasured = [s for s in doc["slices"] if s.get("interval_noise") == "none"
                  and (s.get("n_seeds") or 1) == 1]
    # (seeds of a searched sweep, each at its own LRs: no level holds two; said apart from
    # one seed's slices, whose fix is a seed)
    several = [s for s in doc["slices"] if s.get("interval_noise") == "none"
               and (s.get("n_seeds") or 1) > 1]
    if several:
        lines.append(f"  {_which(several, doc['slices'])} "
                     f"{'have' if len(several) != 1 else 'has'} no LR interval: fewer than 5 "
                     "LRs within two grid steps of the best, none tried by two seeds, do not "
                     "measure the loss noise; add LRs around the best"
                     + (wait or (f" ({doc['next_grid'][0]})" if doc["next_grid"] and
                                 doc["next_grid"][0].startswith("search.") else "")))
    if unmeasured:
        more = _another_seed(doc, recorded=recorded, seeds=seeds)
        lines.append(f"  {_which(unmeasured, doc['slices'])} "
                     f"{'have' if len(unmeasured) != 1 else 'has'} no LR interval: one seed "
                     "with fewer than 5 LRs within two grid steps of its best does not measure "
                     "the loss noise (a quadratic through 3 or 4 points leaves at most one "
                     "residual); add a "
                     + (f"seed or LRs around the best{wait}" if wait else
                        f"seed ({more}) or LRs around the best"))
    misfit = [s for s in doc["slices"] if s.get("interval_noise") == "misfit"]
    if misfit:
        lines.append(f"  the LR intervals of {_which(misfit, doc['slices'])} are as wide as "
                     "the local quadratic's misfit, beyond what the seeds' noise explains (a "
                     "test at 90%: on a true parabola it says so one time in ten): a loss curve "
                     "skewed around the optimum puts the quadratic's vertex toward the gentler "
                     "side (up to a quarter of a grid step); LRs between the grid's, around the "
                     "optimum, narrow both")
    return "\n".join(lines)


def _which(some: list[dict], slices: list[dict]) -> str:
    """`some` of the fit's slices, counted, and named where they are few ("1 slice (N=4e+06
    D=1e+09)"): the count alone did not say which to look at."""
    counted = f"{len(some)} slice{'s' * (len(some) != 1)}"
    names = [_where(s, slices) for s in some]
    if len(some) > 3 or not all(names):
        return counted
    return f"{counted} ({'; '.join(names)})"


def _another_seed(doc: dict, *, recorded: bool, seeds: tuple[int, ...] = (0,)) -> str:
    """How to add a seed to the fitted sweep: the command for a sweep in the store (its seeds
    and the next one: `seeds=[0,1]` on a sweep of seed 3 added two, 0 and 1), words for runs
    read from a file."""
    more = ",".join(map(str, [*seeds, max(seeds, default=-1) + 1]))
    return (f"sweep extend {shlex.quote(doc['sweep'])} 'seeds=[{more}]'" if recorded
            else "runs of another seed")


def _one_seed(doc: dict) -> bool:
    """Were the slices' optima each measured on one seed (their intervals, where asked for,
    from one seed's residuals or none)?"""
    said = [s.get("interval_noise") for s in doc["slices"]
            if s.get("edge") in (None, "diverged") and s.get("interval_noise")]
    return bool(said) and all(n in ("fit", "none") for n in said) and all(
        (s.get("n_seeds") or 1) == 1 for s in doc["slices"])


def _stability_notes(doc: dict, *, recorded: bool) -> list[str]:
    """Slices whose optimum is the largest stable LR (the loss still fell there and the next
    LR diverged), and slices with stable runs past their first divergence."""
    slices = doc["slices"]
    lines = []
    capped = [s for s in slices if s.get("edge") == "diverged" and not s.get("conflict")]
    if capped:
        add = next_grid(pd.DataFrame({"extend": [s.get("extend") for s in capped]}))
        add = add[0] if add else ""
        if doc["next_grid"] and doc["next_grid"][0].startswith("search."):
            add = doc["next_grid"][0]
        how = (f"; to narrow {'it' if len(capped) == 1 else 'them'}: sweep extend "
               f"{shlex.quote(doc['sweep'])} {shlex.quote(add)}" if recorded and add
               else f" ({add} would narrow {'it' if len(capped) == 1 else 'them'})" if add
               else "")
        if len(capped) == 1:
            where = _where(capped[0], slices)
            lines.append(f"  {where + ': ' if where else ''}the loss still falls at "
                         f"optim.lr={capped[0]['lr_opt']:.3g}, and the next LR up diverged: "
                         f"the optimum is at the stability limit, between the two{how}")
        else:
            lines.append(f"  {len(capped)} slices: the loss still falls at their largest "
                         "stable LR, and the next LR up diverged: their optima are at the "
                         f"stability limit{how}")
    past = [s for s in slices if s.get("conflict")]
    for s in past[:3]:
        where = _where(s, slices)
        where = f"{where}: " if where else ""
        limit = s["stability_limit"]
        # (other runs at the LR that diverged: "diverged at 0.00869 but runs at 0.00869 ...")
        shown = ", ".join(f"{v:.3g}" for v in s["beyond_limit"] if v != limit)
        shown = (f"at it and at {shown}" if shown and limit in s["beyond_limit"] else
                 f"at {shown}" if shown else "at it")
        better = ("finished" if s.get("loss_opt") is None
                  else f"finished with a lower loss than the optimum below it "
                       f"(optim.lr={s['lr_opt']:.3g}, loss {s['loss_opt']:.4f})")
        lines.append(f"  {where}a run diverged at optim.lr={limit:.3g} but runs "
                     f"{shown} {better}: the slice is left out of the laws; check or rerun "
                     "the runs that diverged" + (" (`sweep status` names them)" if recorded
                                                   else ""))
    if len(past) > 3:
        lines.append(f"  (and {len(past) - 3} more such slices: fit.json's slices mark them "
                     "conflict)")
    return lines


POINTS_MISFIT = ("its optima lie off the law by more than their own intervals allow (p={p:.2g}): "
                 "the interval, taken from those, is too narrow; another value along the "
                 "law's axis gives it residuals to measure")

SLICES_SAID = 12
"""Up to this many LR slices, the summary gives each one's optimum (more: fit.json)."""


def _each_slice(doc: dict) -> list[str]:
    """Each slice's LR optimum with its interval, when there are 2 to `SLICES_SAID`: an LR
    transfer study reads them across widths (they were only in fit.json and a plot)."""
    slices = [s for s in doc["slices"]
              if s.get("lr_opt") is not None or s.get("edge") == "all_diverged"]
    if not 2 <= len(slices) <= SLICES_SAID:
        return []
    lines = ["  LR optimum per slice (fit.json: slices):"]
    for row in slices:
        if row.get("edge") == "all_diverged":
            # (one flaky run at the lowest LR, beside finished ones there and above, read
            # "every LR diverged")
            lines.append(f"    {_where(row, slices)}: " + (
                f"no optimum: a run diverged at the lowest LR, "
                f"optim.lr={row['stability_limit']:.3g}, where runs finished (left out of the "
                "laws; check it)" if row.get("conflict") else "every LR diverged"))
            continue
        lo, hi = row.get("lr_lo"), row.get("lr_hi")
        said = f"optim.lr={row['lr_opt']:.3g}"
        if isinstance(lo, float) and isinstance(hi, float):
            said = f"optim.lr={with_interval(row['lr_opt'], lo, hi)}"
        if row.get("edge") in ("low", "high", "single"):
            said += " (the best LR tried: not bracketed)"
        elif row.get("edge") == "diverged":
            said += " (at the stability limit)"
        said += _stops_at_edge(row)
        if row.get("conflict"):
            said += " (contradicted by runs past its stability limit: check them)"
        lines.append(f"    {_where(row, slices)}: {said}")
    return lines


def _stops_at_edge(row: dict) -> str:
    """" (its interval stops at the lowest LR tried ...)" for a bracketed slice whose interval
    ends at the grid's edge (`slices.lr_optima`: interval_at_edge), else ""."""
    sides = row.get("interval_at_edge")
    if not sides or row.get("edge") in ("low", "high", "single"):
        return ""
    return (" (its interval stops at the "
            + " and ".join({"low": "lowest", "high": "highest"}[s] for s in sides)
            + " LR tried: it may be wider; an LR past " + ("them" if len(sides) > 1 else "it")
            + " would tell)")


def _where(row: dict, slices: list[dict]) -> str:
    """A slice named by the keys that vary across `slices` ('' when there is one slice)."""
    varying = [k for k in row if ("." in k or k in ("N", "D", "B", "wd"))
               and len({str(s.get(k)) for s in slices}) > 1]
    # (a sweep's slices name N, D, B, λ by their config keys too: said once)
    varying = [k for k in varying if _CONFIG_KEY.get(k) not in varying]
    return " ".join(f"{k}={_short(row[k])}" for k in varying)


def _skipped(skipped: dict[str, str]) -> dict[str, str]:
    """A law skipped for one reason in several groups is said once, with the group count."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for key, reason in skipped.items():
        by_reason.setdefault((key.split("[")[0], reason), []).append(key)
    return {keys[0] if len(keys) == 1 else f"{law} ({len(keys)} groups)": reason
            for (law, reason), keys in by_reason.items()}


def _slices_and_best(doc: dict) -> tuple[list[dict], dict | None]:
    """The slices with a fitted optimum, and the one of them with the lowest loss there."""
    slices = [s for s in doc["slices"] if s.get("loss_opt") is not None]
    # (a slice whose finished runs past a divergence beat it is the best only if all are)
    sound = [s for s in slices if not s.get("conflict")] or slices
    return slices, min(sound, key=lambda s: s["loss_opt"], default=None)


def _best_slice(doc: dict) -> str | None:
    """The slice with the lowest loss at its LR optimum, named by the keys that vary."""
    slices, best = _slices_and_best(doc)
    if best is None:
        return None
    if len(slices) == 1 and best.get("edge") in ("low", "high", "single"):
        return (f"none bracketed (the best LR tried: optim.lr={best['lr_opt']:.3g}, loss "
                f"{best['loss_opt']:.4f})")
    if len(slices) == 1:  # one LR sweep: its optimum is the headline, with its interval
        lo, hi = best.get("lr_lo"), best.get("lr_hi")
        lr = (with_interval(best["lr_opt"], lo, hi) if isinstance(lo, float)
              and isinstance(hi, float) and math.isfinite(lo) and math.isfinite(hi)
              else f"{best['lr_opt']:.3g}")
        return (f"optim.lr={lr} ({_fitted(best)})" + _stops_at_edge(best)
                + ("; contradicted by runs past its stability limit (below)"
                   if best.get("conflict") else ""))
    where = _where(best, slices)
    if best.get("edge") in ("low", "high", "single"):  # the best LR tried, not a vertex
        measured = ("mean seed's loss" if best.get("seed_offset") is not None
                    else "measured loss")  # (seeds at other LRs: `slices.seed_offsets`)
        return (f"{where} optim.lr={best['lr_opt']:.3g} ({measured} {best['loss_opt']:.4f}; "
                "not bracketed: its best LR is the edge of those tried)").strip()
    return f"{where} optim.lr={best['lr_opt']:.3g} ({_fitted(best)})".strip()


def _fitted(best: dict) -> str:
    """The vertex's loss, and the best LR tried with its measured loss: a quadratic through
    a steep wall puts its vertex below every loss measured (0.012 nats in a researcher's
    sweep), at an LR nobody trained."""
    said = f"fitted loss {best['loss_opt']:.4f}" + (
        " (the mean seed's: each seed's offset taken out)"
        if best.get("seed_offset") is not None else "")
    lr, loss = best.get("lr_best"), best.get("loss_best")
    if isinstance(lr, float) and isinstance(loss, float) and math.isfinite(loss) and \
            not math.isclose(lr, best["lr_opt"], rel_tol=1e-6):  # (the vertex clipped to it)
        said += f"; best tried: optim.lr={lr:.3g}, loss {loss:.4f}"
    return said


def _best_at_edge(doc: dict) -> str | None:
    """The tuned keys (numeric, not a scale axis a law reads: `init_std`, `output_mult`, ...)
    whose value in the best slice is the smallest or largest any slice tried, said as
    'high end of model.init_std (0.08 of 0.02-0.08)'; None when there is none."""
    from fitter.groups import AXES, AXIS_CONFIG_KEYS

    slices, best = _slices_and_best(doc)
    if len(slices) < 2:
        return None
    # Among the slices at the best one's N, D and B: a key that moves with them (a warmup
    # set per budget) is no tuned axis, and three values are the least that bracket.
    peers = [s for s in slices if all(s.get(a) == best.get(a) for a in AXES if a != "wd")]
    ends = []
    for key in best:
        if "." not in key or key in AXIS_CONFIG_KEYS:
            continue
        try:
            values = sorted({float(s[key]) for s in peers if s.get(key) is not None})
            mine = float(best[key])
        except (TypeError, ValueError):
            continue  # not numeric (muP or SP, a schedule's name)
        if len(values) < 3 or values[0] < mine < values[-1]:
            continue
        end = "low" if mine == values[0] else "high"
        ends.append(f"{end} end of {key} ({_short(mine)} of {_short(values[0])}-"
                    f"{_short(values[-1])})")
    return ", ".join(ends) or None


_CONFIG_KEY = {"N": "model.width", "D": "train.tokens", "B": "train.batch_size",
               "wd": "optim.weight_decay"}


def _short(value) -> str:
    """A slice key's value as a person reads it: 4 significant digits for a float, but a
    whole number those would round (train.tokens=131072 read 1.311e+05) in full."""
    try:
        number = float(value) if isinstance(value, float) or (
            "." in str(value) or "e" in str(value)) else None
    except ValueError:
        return str(value)
    if number is None:
        return str(value)
    if number.is_integer() and float(f"{number:.4g}") != number:
        return str(int(number))
    return f"{number:.4g}"
