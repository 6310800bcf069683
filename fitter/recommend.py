"""Hyperparameters for a big run, read off the fitted laws, with how far they extrapolate.

A sweep fitted per group (muP and SP, two schedules, ...) has one set of laws per group; the
recommendation comes from one of them, chosen with `--group KEY=VALUE` (see `fitter.groups`).
"""

from __future__ import annotations

import numpy as np

from fitter.cbs import unbracketed
from fitter.errors import FitError
from fitter.fit import FitResult, law_name
from fitter.groups import label
from fitter.powerlaw import with_interval


def recommend(result: FitResult, *, params: float, tokens: float,
              batch: float | None = None, group: dict[str, str] | None = None) -> dict:
    """LR, batch size (tokens per step), weight decay and predicted loss at (N, D[, B]).

    Each entry has `value`, `interval` (the laws' 90% interval), `law` and
    `extrapolation` (axis → ratio beyond the fitted range, 1.0 inside it).

    Args:
        result: the fitted sweep.
        params: non-embedding parameters N of the big run.
        tokens: its training tokens D.
        batch: its batch size in tokens per step (default: from the batch or cbs law).
        group: which group's laws to use (key → value); needed when the sweep has several.

    Raises:
        FitError: several groups and no (or no matching) `group`; no law gives a learning rate
            or batch size for this run.
    """
    point = {"N": float(params), "D": float(tokens), "D/N": float(tokens) / float(params)}
    chosen = choose_group(result, group or {})
    laws, skipped = result.laws_of(chosen)
    out, missing = {}, {}
    too_big = None  # (why a batch law's batch is not taken: more than the run's tokens)
    seq_lens = result.runs.table["seq_len"].dropna().unique()
    if batch is not None and len(seq_lens) == 1 and batch < seq_lens[0]:
        raise FitError(f"--batch {batch:g} is less than one sequence of {int(seq_lens[0])} "
                       "tokens: --batch is tokens per optimizer step, e.g. --batch "
                       f"{int(seq_lens[0]) * 256} for 256 sequences.")
    if batch is not None and batch > tokens:
        raise FitError(f"--batch {batch:g} tokens per step is more than the run's --tokens "
                       f"{tokens:g}: give both in tokens.")
    if batch is not None:
        out["batch_tokens"] = {"value": float(batch), "interval": None, "law": "given",
                               "extrapolation": {}}
    elif "batch" in laws or "cbs" in laws:
        name = "batch" if "batch" in laws else "cbs"
        out["batch_tokens"] = _entry(laws[name], point, name)
        below, above = unbracketed(laws[name].points) if name == "cbs" else (0, 0)
        if below or above:
            n = len(laws[name].points)
            side = " and ".join(f"{k} lie {w} batch size their sweep tried" for w, k in (
                ("below the smallest", below), ("above the largest", above)) if k)
            out["batch_tokens"]["caveat"] = (
                f"of the {n} critical batch sizes behind the cbs law, {side}: read off the "
                "fitted hyperbola, not measured; sweep batch sizes around them, or pass --batch")
        if out["batch_tokens"]["value"] > tokens:
            missing["batch_tokens"] = too_big = (
                f"the {name} law gives {out.pop('batch_tokens')['value']:.3g} tokens a step, "
                f"more than the run's {tokens:.3g} tokens: it does not hold out here; pass "
                "--batch (tokens per step)")
    else:
        missing["batch_tokens"] = skipped.get("batch", "no batch law")
    if "batch_tokens" in out:
        point["B"] = out["batch_tokens"]["value"]
        seq_len = result.runs.table["seq_len"].dropna().unique()
        if len(seq_len) == 1:
            out["batch_size"] = {"value": point["B"] / seq_len[0], "unit": "sequences of "
                                 f"{int(seq_len[0])} tokens (train.batch_size)"}
    if "lr" in laws:
        needs_b = "B" in laws["lr"].axes and "B" not in point
        if needs_b and too_big:
            raise FitError(f"the lr law depends on B, and {too_big}.")
        not_fitted = [law for law in ("batch", "cbs") if law in skipped]
        if needs_b and not_fitted:
            raise FitError(f"the lr law depends on B but no batch size is known: the "
                           f"{' and '.join(not_fitted)} law{'s' * (len(not_fitted) > 1)} "
                           f"{'were' if len(not_fitted) > 1 else 'was'} not fitted (`sweep "
                           "fit` says why); pass --batch (tokens per step).")
        if needs_b:
            raise FitError("the lr law depends on B but no batch size is known; pass --batch "
                           "(tokens per step) or sweep 3+ batch sizes for the batch law.")
        out["lr"] = _entry(laws["lr"], point, "lr")
        for later, line in laws["lr"].extra.get("along", {}).items():
            # (fitted where `later` moved with `of`: its effect is in of's exponent)
            if later not in point:
                continue
            on_line = line["factor"] * point[line["of"]] ** line["power"]
            if abs(np.log(point[later] / on_line)) > np.log(1.1):
                out["lr"]["caveat"] = (
                    f"the lr law was fitted where {later} = {line['factor']:.3g}·"
                    f"{line['of']}^{line['power']:.3g} ({later} = {on_line:.3g} here), and "
                    f"this run has {later} = {point[later]:.3g}: off that line the law does "
                    f"not know how the LR moves with {later} alone")
        # An axis the sweep never varied is not in the law: the LR cannot follow the big
        # run along it (N or D of the big run, whatever it is, gives the same LR). Said.
        table = result.runs.table
        fixed = {a: float(table[a].dropna().iloc[0]) for a in ("N", "D", "B")
                 if a not in laws["lr"].axes and a in table
                 and table[a].dropna().nunique() == 1}
        if fixed:
            out["lr"]["held_fixed"] = fixed
        if (base := _mup_base_width(result, chosen)) is not None:
            out["lr"]["base_width"] = base
        if (flat := _flat_in_n(laws["lr"], out["lr"])) is not None:
            out["lr"].setdefault("warnings", []).append(flat)
        if (p := laws["lr"].extra.get("points_misfit_p")) is not None:
            from fitter.fit import POINTS_MISFIT

            out["lr"].setdefault("warnings", []).append(POINTS_MISFIT.format(p=p))
        if capped := laws["lr"].extra.get("at_stability_limit"):
            from fitter.fit import STABILITY_LIMITED

            out["lr"].setdefault("warnings", []).append(STABILITY_LIMITED.format(
                capped=capped, n=len(laws["lr"].points)))
    else:
        missing["lr"] = skipped.get("lr", "no lr law")
    if "timescale" in laws and "lr" in out and "B" in point:
        out["weight_decay"] = _weight_decay(laws["timescale"], laws["lr"], point)
    elif "timescale" in laws and "lr" in out:
        missing["weight_decay"] = ("λ = B/(η·τ·D) needs the big run's batch size, which no law "
                                   "gives here: pass --batch (tokens per step)")
    else:
        missing["weight_decay"] = skipped.get("timescale", "needs the lr and timescale "
                                                     "laws and a batch size")
    if "loss" not in laws:  # (said as the others are: the row was missing without a word)
        missing["loss"] = skipped.get("loss", "no loss law")
    else:
        loss = laws["loss"]
        out["loss"] = {"value": loss.predict(point["N"], point["D"]),
                       "interval": list(loss.interval(point["N"], point["D"]))
                       if loss.has_interval else None,
                       "law": "loss",
                       "extrapolation": _extrapolation(loss.to_json()["range"], point),
                       "data_span": _span(loss.to_json()["range"]),
                       **_why_no_interval(loss, "loss")}
    if not out:  # (a loss law alone recommends no hyperparameter, and still says the loss)
        raise FitError(f"no law in {result.runs.source} gives a learning rate, batch size or "
                       "loss: " + "; ".join(f"{key}: {missing[key].rstrip('.')}" for key in
                                            ("lr", "batch_tokens") if key in missing) + ".")
    # Groups left out because they have no law (an SP group whose LRs all sat on the grid's
    # edge): the recommendation is for the chosen group only, which is said.
    lawless = [label(g) for g in result.group_list
               if g != chosen and g and not result.laws_of(g)[0]]
    for entry in out.values():
        _warn(entry)
    if "lr" in out and out["lr"]["value"] > IMPLAUSIBLE_LR:
        out["lr"].setdefault("warnings", []).append(
            f"an AdamW learning rate above {IMPLAUSIBLE_LR:g} trains no model: the law does not "
            "hold out here (check its exponents and the slices behind it in `sweep fit`)")
    return {"inputs": {"N": point["N"], "D": point["D"], "B": batch}, "group": chosen, **out,
            "unavailable": missing, "groups_without_laws": lawless}


def _mup_base_width(result: FitResult, group: dict[str, str]) -> float | None:
    """The one `model.base_width` of a group of muP runs, else None: a muP optim.lr is the
    hidden matrices' LR at that width (they take it times base_width/width), so it holds for a
    big run of the same base width only (`model=tiny` has 64, `model=gpt124m` 256: 4x)."""
    from fitter.data import BASE_WIDTH_KEY, PARAM_KEY
    from fitter.plot_style import select

    table = select(result.runs.table, group)
    if PARAM_KEY not in table or BASE_WIDTH_KEY not in table or table.empty:
        return None
    if not (table[PARAM_KEY].astype(str) == "mup").all() or table[BASE_WIDTH_KEY].nunique() != 1:
        return None
    try:
        return float(table[BASE_WIDTH_KEY].iloc[0])
    except ValueError:
        return None


LAWS = "\x00laws\x00"  # (where a skipped law's reason names it: `_merged`)


def _merged(skipped: dict[str, str]) -> list[str]:
    """The reasons laws were skipped, once each: laws skipped for one cause ("1 of 108 runs
    lack N, which the lr law needs") said together ("... which the loss, lr and batch laws
    need")."""
    by_cause: dict[str, list[str]] = {}
    for key, reason in skipped.items():
        law = law_name(key)
        cause = reason.replace(f"the {law} law needs", f"the {LAWS} need", 1).replace(
            f"the {law} law", f"the {LAWS}", 1)
        by_cause.setdefault(cause, []).append(law)
    out = []
    for cause, laws in by_cause.items():
        names = (f"{laws[0]} law" if len(laws) == 1 else
                 f"{', '.join(laws[:-1])} and {laws[-1]} laws")
        said = cause.replace(LAWS, names)
        out.append(said.replace(f"the {names} need", f"the {names} needs")
                   if len(laws) == 1 else said)
    return list(dict.fromkeys(out))


def choose_group(result: FitResult, wanted: dict[str, str]) -> dict[str, str]:
    """The one group of the fit that matches every KEY=VALUE in wanted.

    Raises:
        FitError: none or several match.
    """
    # Only a group with a law can recommend anything: choosing among the others is no choice.
    groups = [g for g in result.group_list
              if any(result.groups.get(key) == g for key in result.laws)]
    if not groups:
        every = result.group_list
        chosen = [g for g in every if all(g.get(k) == v for k, v in wanted.items())]
        if wanted and every != [{}] and not chosen:  # (its reasons were every group's)
            raise FitError(f"--group {label(wanted)} matches none of the groups of "
                           f"{result.runs.source}; choose one of: "
                           f"{'; '.join('--group ' + label(g) for g in every)}.")
        chosen = chosen or every
        # (one line per law, as `sweep fit` lists them: joined, five laws' reasons were one
        # line of 700 characters; each group's own, named where there are several: merged
        # over groups they read "the timescale and timescale laws")
        reasons = "".join(f"\n  {label(g) + ': ' if len(chosen) > 1 else ''}{r.rstrip('.')}."
                          for g in chosen for r in _merged(result.laws_of(g)[1]))
        where = (f"group {label(chosen[0])} of {result.runs.source}" if len(chosen) == 1
                 and chosen[0] else result.runs.source)
        anywhere = " in any group" if len(chosen) > 1 else ""
        raise FitError(f"{where} has no law{anywhere} to recommend from"
                       + (f":{reasons}" if reasons else "."))
    matching = [g for g in groups if all(g.get(k) == v for k, v in wanted.items())]
    if len(matching) == 1:
        return matching[0]
    lawless = [g for g in result.group_list if g not in groups
               and all(g.get(k) == v for k, v in wanted.items())]
    if wanted and not matching and lawless:
        reasons = "; ".join(dict.fromkeys(
            r.rstrip(".") for g in lawless for r in result.laws_of(g)[1].values()))
        others = "; ".join("--group " + label(g) for g in groups)
        raise FitError(f"group {label(lawless[0])} of {result.runs.source} has no law to "
                       f"recommend from{': ' + reasons if reasons else ''}. Groups with laws: "
                       f"{others}.")
    labels = [label(g) for g in groups]
    if groups == [{}]:
        raise FitError(f"{result.runs.source} has one set of laws for all its runs (no key "
                       f"splits them into groups); drop --group {label(wanted)}.")
    if not matching:
        given = label(wanted)
        raise FitError(f"--group {given} matches none of the groups of {result.runs.source}; "
                       f"choose one of: {'; '.join('--group ' + x for x in labels)}.")
    raise FitError(f"{result.runs.source} has laws for {len(matching)} groups "
                   f"({'; '.join(label(g) for g in matching)}); choose one with --group, "
                   f"e.g. --group {label(matching[0])}.")


def _entry(law, point: dict, name: str) -> dict:
    x = {a: point[a] for a in law.axes}
    meaningful = law.has_interval
    return {"value": law.predict(**x), "law": name,
            "interval": list(law.interval(**x)) if meaningful else None,
            "form": law.form, "extrapolation": _extrapolation(law.to_json()["range"], point),
            "data_span": _span(law.to_json()["range"]),
            **_why_no_interval(law, name), **_interval_from(law, name)}


def _flat_in_n(law, entry: dict) -> str | None:
    """Where the lr law's a_N interval holds 0 and the value lies past the widths swept: the
    optima do not show the LR moving with N, and the value carries the fitted slope out (a
    3-point muP law's a_N of 0.097 from overlapping optima gave an LR 2.5x every one)."""
    ratio = entry.get("extrapolation", {}).get("N", 1.0)
    if not law.has_interval or "a_N" not in law.exponents or abs(ratio) <= 1.0:
        return None
    lo, hi = law.ci["a_N"]
    if not lo <= 0.0 <= hi:
        return None
    return (f"a_N's {law.ci_level:.0%} interval [{lo:.3g}, {hi:.3g}] holds 0: these optima do "
            "not show the best LR moving with N (muP predicts it does not), and this value "
            f"carries the fitted slope {law.coef['a_N']:.3g} {abs(ratio):.3g}× past them; "
            "the interval is that uncertainty")


def _interval_from(law, name: str) -> dict:
    """`{"interval_from": ...}` where the interval holds the points' noise alone (a law of
    one residual: `powerlaw.POINTS_CI_METHOD`), else {}."""
    if not law.has_interval or law.interval_source != "points":
        return {}
    return {"interval_from": f"the {len(law.points)} optima's own intervals alone, not "
                             f"scatter about the {name} law beyond them"}


def _why_no_interval(law, name: str) -> dict:
    """`{"no_interval": reason}` for a law without intervals, else {}: a value with no
    interval read as exact (a 3-point lr law extrapolated 8,700x gave one number, and said
    nothing of why there was no band around it)."""
    if law.has_interval:
        return {}
    if not len(law.boot):
        return {"no_interval": "--n-boot 0"}
    # (the lr law's points carry intervals of their own, which stand in for one residual)
    each = ", or an interval on each of its optima" if name == "lr" and len(
        law.points) == len(law.coef) + 1 else ""
    return {"no_interval": f"the {name} law has {len(law.points)} points and an interval "
                           f"needs {len(law.coef) + 2}{each}"}


def _weight_decay(timescale, lr, point: dict) -> dict:
    # λ = B / (η τ D), with η and τ from the two laws' draws (independent streams).
    k = min(len(timescale.boot), len(lr.boot))
    log_eta = lr.boot[:k] @ np.array([1.0, *[np.log10(point[a]) for a in lr.axes]])
    log_tau = timescale.boot[:k] @ np.array([1.0, np.log10(point["D/N"])])
    samples = point["B"] / (10 ** log_eta * 10 ** log_tau * point["D"])
    eta = lr.predict(**{a: point[a] for a in lr.axes})
    tau = timescale.predict(**{"D/N": point["D/N"]})
    tail = (1 - lr.ci_level) / 2
    meaningful = lr.has_interval and timescale.has_interval
    return {"value": point["B"] / (eta * tau * point["D"]),
            "interval": [float(np.quantile(samples, tail)), float(np.quantile(samples, 1 - tail))]
            if meaningful else None,
            "law": "timescale", "timescale": tau, "form": "weight_decay = B / (lr * tau * D)",
            **(_why_no_interval(lr, "lr") or _why_no_interval(timescale, "timescale")),
            # λ takes η from the lr law: its extrapolation is λ's too
            "extrapolation": {**_extrapolation(lr.to_json()["range"], point),
                              **_extrapolation(timescale.to_json()["range"], point)}}


FAR = 1e4
"""Extrapolation (ratio to the nearest end of the data) past which a recommendation is said
to be a guess: four decades beyond the proxies the law was fitted on."""


IMPLAUSIBLE_LR = 1.0
"""A recommended AdamW learning rate above this is said to be one no run would train at."""


def _extrapolation(ranges: dict, point: dict) -> dict[str, float]:
    """Per axis, how far the point lies outside the data: value / max above it, min / value
    below it (then negative, -min/value), 1 inside."""
    out = {}
    for axis, (lo, hi) in ranges.items():
        value = point.get(axis)
        if value is not None:
            out[axis] = float(value / hi if value > hi else -lo / value if value < lo else 1.0)
    return out


def _span(ranges: dict) -> dict[str, float]:
    """Per axis of a law, how many times its largest value the data spans is its smallest."""
    return {axis: float(hi / lo) for axis, (lo, hi) in ranges.items() if lo > 0}


def _warn(entry: dict) -> None:
    """An entry's `warnings` (said under it, and in --json): an axis farther out than `FAR`,
    or farther out than the data's own span along it (1,250× past widths that span 8× read
    as any recommendation, its ±13% interval as if the law were known out there)."""
    ratios = entry.get("extrapolation", {})
    far = [a for a, r in ratios.items() if abs(r) > FAR]
    if far:
        entry.setdefault("warnings", []).append(
            f"{' and '.join(far)} lie{'s' * (len(far) == 1)} more than {FAR:,.0f}× outside "
            "what the sweep trained: a power law is rarely checked that far out; take this as "
            "a guess, or sweep nearer sizes")
    spans = entry.get("data_span", {})
    past = [a for a, r in ratios.items() if a not in far and a in spans and spans[a] > 1
            and abs(r) > spans[a]]
    if past:
        said = "; ".join(f"{a} lies {abs(ratios[a]):,.3g}× "
                         f"{'beyond' if ratios[a] > 0 else 'below'} the sweep's, whose {a} "
                         f"spans {spans[a]:,.3g}×" for a in past)
        entry.setdefault("warnings", []).append(
            f"{said}: farther out than the data reaches across, so the interval holds only "
            "if the law keeps its slope out there; sweep a wider range to test it")


def format_recommendation(rec: dict) -> str:
    """Plain-text lines for the terminal."""
    lines = []
    if rec.get("group"):
        text = f"{'group':<13} {label(rec['group'])}: the laws of these runs only"
        if rec.get("groups_without_laws"):
            text += (f"\n{'':<13} ({', '.join(rec['groups_without_laws'])} "
                     f"ha{'ve' if len(rec['groups_without_laws']) > 1 else 's'} no law to "
                     "recommend from: `sweep fit` says why)")
        lines.append(text)
    for key in ("lr", "batch_tokens", "batch_size", "weight_decay", "loss"):
        entry = rec.get(key)
        if entry is None:
            continue
        text = f"{key:<13} {entry['value']:.4g}"
        if entry.get("interval"):
            value, interval = with_interval(entry["value"], *entry["interval"],
                                            value_digits=4).split(" ", 1)
            text = f"{key:<13} {value}  {interval}"
            if entry.get("interval_from"):
                text += f"  (interval from {entry['interval_from']})"
        elif entry.get("no_interval"):
            text += f"  (no interval: {entry['no_interval']})"
        if "unit" in entry:
            text += f"  {entry['unit']}"
        if entry.get("law"):
            text += f"  law: {entry['law']}"
        beyond = {a: r for a, r in entry.get("extrapolation", {}).items() if abs(r) > 1.0}
        if beyond:
            text += "  extrapolates " + ", ".join(
                f"{a} {abs(r):.3g}× {'beyond' if r > 0 else 'below'} the data"
                for a, r in beyond.items())
        elif entry.get("extrapolation"):
            text += "  within the data range"
        for said in entry.get("warnings", []) + ([entry["caveat"]] if entry.get("caveat")
                                                 else []):
            text += f"\n{'':<13} {said}"
        if entry.get("base_width") is not None:
            base = f"{entry['base_width']:g}"
            text += (f"\n{'':<13} a muP LR: it holds with model.base_width={base}, the sweep's "
                     f"(hidden matrices take it times {base}/width); set model.base_width={base} "
                     "in the big run, or another base width scales its hidden LR by the ratio")
        for axis, value in entry.get("held_fixed", {}).items():
            option, key = {"N": ("--params", "model.width"), "D": ("--tokens", "train.tokens"),
                           "B": ("--batch", "train.batch_size")}[axis]
            if axis == "B" and "batch_tokens" not in rec:
                text += (f"\n{'':<13} the sweep held B at {value:,.0f} tokens a step: this LR "
                         f"is for that batch; sweep {key} to learn how it moves with B")
                continue
            unit = {"N": " parameters", "D": " tokens", "B": " tokens a step"}[axis]
            text += (f"\n{'':<13} the sweep held {axis} at {value:,.0f}{unit}, so the law has no "
                     f"{axis} term and {option} does not enter this value: sweep {key} to "
                     "learn how the LR moves with it")
        lines.append(text)
    for key, reason in rec["unavailable"].items():
        lines.append(f"{key:<13} not available: {reason}")
    return "\n".join(lines)
