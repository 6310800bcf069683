"""`sweep status` and `sweep list`: where a sweep stands, read from the tracking store (and
from its trials' folders where the store has not caught up), and the text the commands print.
"""

from __future__ import annotations

import contextlib
import json
import math
import time

from mlflow import MlflowClient

from orchestrator import legacy
from orchestrator.driver import prepare
from orchestrator.eta import eta_s, last_metrics, progress_flops
from orchestrator.spec import SweepSpec, root_path
from orchestrator.sweep_record import (
    driver_error,
    driver_silent_s,
    live_status,
    parent_run,
    stored_spec,
)
from trainer.errors import ConfigError
from trainer.schema import (
    DONE,
    FAILED,
    FINAL_EVAL_LOSS,
    FINAL_WALL_S,
    FINISHED,
    INTERRUPTED,
    KIND_SWEEP,
    KIND_TRIAL,
    KIND_TRUNK,
    PARAM_TOKENS,
    RUNNING,
    SWEEP_DRIVER_TAG,
    SWEEP_LAUNCH_TAG,
    TOKENS_IF_INDEPENDENT,
    TOKENS_RATIO,
    TOKENS_TRAINED,
    TRIAL_ERROR_TAG,
    TRIAL_ID_TAG,
    TRIAL_STATUS_TAG,
    TRUNK_ID_TAG,
    TRUNK_STATUS_TAG,
    recorded_trials,
    sweep_runs,
    token_totals,
)


def trial_counts(tracking_uri: str, spec: SweepSpec, states: dict, gone: int | None
                 ) -> tuple[dict[str, int], list[dict] | None, dict[str, float | None]]:
    """The sweep's trials per status, `pending` those not begun (a grid's trials not in the
    store; a searched sweep's trials its studies have still to ask), as `status` and `list`
    count them; a searched sweep's studies (`search.search_status`), else None; and the ids
    of the sweep's trials, each with its training FLOPs (None in a searched sweep). Trials
    recorded under an old id (`orchestrator.legacy`) move to theirs in `states`."""
    counts: dict[str, int] = {}
    slices = None
    ids: dict[str, float | None]
    if spec.optuna is None:
        _, trials = prepare(spec)
        ids = {trial.trial_id: trial.flops for trial in trials}
        # (recorded under an id an earlier version gave them, until a launch migrates them:
        # theirs, as the dry run says; added to `states`, which the caller reads on)
        for new_id, state in legacy.legacy_records(trials, states).items():
            states[new_id] = states.pop(state["run"].data.tags[TRIAL_ID_TAG])
    else:  # a searched sweep's trials are those its studies asked for, and those to ask
        from orchestrator import search
        _, plan, storage = search.prepare_search(spec, tracking_uri, create=False)
        slices = search.search_status(plan, storage)
        ids = dict.fromkeys(states)
        # Pending: the points the studies have still to ask, and those asked but not begun
        # (not in the store). A point asked twice is one trial: counting n_trials against
        # the trials in the store left a finished study with "2 pending".
        unrunnable = search.unrunnable_points(plan, storage)
        pending = sum(max(s["n_trials"] - s["used"], 0) for s in slices
                      if not s["tried_all"]) + max(
            search.asked_points(plan, storage) - len(ids) - unrunnable, 0)
        counts.update({"pending": pending} if pending > 0 else {})
        counts.update({FAILED: unrunnable} if unrunnable else {})
    for trial_id in ids:
        s = states.get(trial_id, {}).get("status", "pending")
        s = INTERRUPTED if s == RUNNING and gone is not None else s
        counts[s] = counts.get(s, 0) + 1
    return counts, slices, ids


def sweeps(tracking_uri: str) -> list[dict]:
    """Every sweep in the store, oldest first: name, status (as `status` tells it, a killed
    driver included), trials per status as `status` counts them (pending included), and when
    it started (epoch ms)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    out = []
    for exp in client.search_experiments():
        parents = sweep_runs(client, exp.experiment_id, KIND_SWEEP)
        if not parents:
            continue  # not a sweep (MLflow's Default, a user's own experiment)
        parent = min(parents, key=lambda run: (run.info.start_time, run.info.run_id))
        status, gone = live_status(parent)
        silent = driver_silent_s(parent, status)
        try:
            counts, _, _ = trial_counts(tracking_uri, stored_spec(tracking_uri, exp.name),
                                        recorded_trials(tracking_uri, exp.name), gone)
        except Exception:  # a spec that no longer composes (a config key since removed), or
            # one not stored yet (its launch is starting): the trials recorded, as recorded
            counts = {}
            for run in sweep_runs(client, exp.experiment_id, KIND_TRIAL):
                s = run.data.tags.get(TRIAL_STATUS_TAG, RUNNING)
                s = INTERRUPTED if s == RUNNING and gone is not None else s
                counts[s] = counts.get(s, 0) + 1
        out.append({"sweep": exp.name, "status": status, "counts": counts,
                    "started_ms": parent.info.start_time, "driver_silent_s": silent})
    return sorted(out, key=lambda row: row["started_ms"] or 0)


def format_sweeps(rows: list[dict]) -> str:
    """The human-readable `sweep list`."""
    if not rows:
        return "no sweep is recorded in this store (sweep launch SPEC starts one)"
    width = max(len(row["sweep"]) for row in rows)
    lines = []
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime((row["started_ms"] or 0) / 1000))
        total = sum(row["counts"].values())
        counts = ", ".join(f"{n} {s}" for s, n in sorted(row["counts"].items()))
        silent = (f"; driver silent for {row['driver_silent_s'] / 60:.0f} min"
                  if row.get("driver_silent_s") else "")
        lines.append(f"{row['sweep']:<{width}}  {row['status']:<11}  started {when}  "
                     f"{total} trial{'s' * (total != 1)}" + (f" ({counts})" if counts else "")
                     + silent)
    return "\n".join(lines)


def _short_label(label: str) -> str:
    """A trial's label with its searched values to 4 significant digits, as the slice lines
    print them (optim.lr=0.0043066092130092095 reads optim.lr=0.004307)."""
    def short(item: str) -> str:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            return item
        return f"{key}={number:.4g}" if sep and len(value) > 8 and "." in value else item
    return " ".join(short(item) for item in label.split(" "))


def _trunk_position(run, storage_root: str) -> tuple[int | None, int | None]:
    """The tokens a training trunk has reached (its folder's metrics.jsonl on this machine,
    else what the store holds) and the tokens its task trains it to (the last branch point in
    its `trunk.json`); None where unknown."""
    from trainer.branching import read_index, trunk_dir

    trunk_id = run.data.tags.get(TRUNK_ID_TAG, "")
    folder = trunk_dir(root_path(storage_root), trunk_id) if trunk_id else None
    row = last_metrics(folder / "metrics.jsonl") if folder else None
    tokens = (row or {}).get("train/tokens", run.data.metrics.get("train/tokens"))
    points = read_index(folder).get("branch_points") if folder else None
    return (None if tokens is None else int(tokens),
            _whole_batches(run, int(max(points))) if points else None)


def _whole_batches(run, target: int) -> int:
    """The tokens a trunk stops at for a branch point `target`: the last batch boundary at
    or below it (`trainer.trunk`), where its batch is constant (104,857 was shown as the end
    of a trunk that stops at 104,448)."""
    params = run.data.params
    if params.get("train.batch_schedule", "constant") != "constant":
        return target
    try:
        batch = int(params["train.batch_size"]) * int(params["train.seq_len"])
    except (KeyError, ValueError):
        return target
    return target // batch * batch if batch > 0 else target


def _trunk_positions(training: list, storage_root: str) -> dict:
    """`trunk_tokens` and `trunk_targets` of the training trunks, in order."""
    at = [_trunk_position(run, storage_root) for run in training]
    return {"trunk_tokens": [tokens for tokens, _ in at],
            "trunk_targets": [target for _, target in at]}


def _trunk_at(tokens: int, target: int | None) -> str:
    """`120,000 of 393,216 tokens (31%)`, or `120,000 tokens` where the target is unknown."""
    if not target:
        return f"{tokens:,} tokens"
    return f"{tokens:,} of {target:,} tokens ({min(tokens / target, 1.0):.0%})"


def _stopped_trunks(runs: list, storage_root: str) -> list[dict]:
    """The trunks of a stopped sweep that did not end (a driver killed or stopped while they
    trained), with the tokens their folder holds (a killed driver wrote none to MLflow)."""
    from trainer.branching import read_index, trunk_dir

    out = []
    for run in runs:
        if run.data.tags.get(TRUNK_STATUS_TAG) not in (RUNNING, INTERRUPTED, FAILED):
            continue
        trunk_id = run.data.tags.get(TRUNK_ID_TAG, "")
        index = read_index(trunk_dir(root_path(storage_root), trunk_id)) if trunk_id else {}
        tokens = index.get("tokens") or run.data.metrics.get("final/tokens") or 0
        points = index.get("branch_points")
        out.append({"trunk": run.info.run_name, "tokens": int(tokens),
                    "target": _whole_batches(run, int(max(points))) if points else None})
    return out


def _with_stopped_trunks(totals: dict[str, float], trunk_runs: list, storage_root: str
                         ) -> dict[str, float]:
    """The totals with each stopped trunk at the tokens its folder holds where its record
    says fewer: a halving trunk extended past the branch point it had ended at, then
    stopped, kept that end's tokens (a stranger's sweep read 315,392 for 347,648)."""
    from trainer.schema import TOKENS_IF_INDEPENDENT, TOKENS_RATIO, TOKENS_TRAINED

    recorded = {run.info.run_name: run.data.metrics.get("final/tokens", 0.0)
                for run in trunk_runs}
    beyond = sum(max(trunk["tokens"] - recorded.get(trunk["trunk"], 0.0), 0.0)
                 for trunk in _stopped_trunks(trunk_runs, storage_root))
    if not beyond:
        return totals
    trained, independent = totals[TOKENS_TRAINED] + beyond, totals[TOKENS_IF_INDEPENDENT]
    return {**totals, TOKENS_TRAINED: trained,
            TOKENS_RATIO: trained / independent if independent else 1.0}


def status(tracking_uri: str, name: str) -> dict:
    """Counts per status, running trials with progress, best trial so far, ETA, and the
    tokens trained against the tokens the done trials would have trained alone."""
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = parent_run(client, name)
    spec = stored_spec(tracking_uri, name)
    states = recorded_trials(tracking_uri, name)
    # (a killed driver's trials left `running` are counted as what they are, interrupted)
    status, gone = live_status(parent)
    unreadable = None
    try:
        counts, slices, ids = trial_counts(tracking_uri, spec, states, gone)
    except ConfigError as err:  # (its data is not on this machine, or not where it was)
        if spec.optuna is not None:  # (a search's storage it cannot open: said as it is)
            raise
        unreadable, slices, ids = err.problems[0], None, dict.fromkeys(states)
        counts = {}
        for state in states.values():
            said = INTERRUPTED if state["status"] == RUNNING and gone is not None \
                else state["status"]
            counts[said] = counts.get(said, 0) + 1
    running = [_progress(state["run"], spec.storage_root) for state in states.values()
               if state["status"] == RUNNING and gone is None]
    trunk_runs = sweep_runs(client, parent.info.experiment_id, KIND_TRUNK)
    training = [] if status != RUNNING else [
        run for run in trunk_runs if run.data.tags.get(TRUNK_STATUS_TAG) == RUNNING]
    trunks = [run.info.run_name for run in training]
    stopped = [] if status == RUNNING else _stopped_trunks(trunk_runs, spec.storage_root)
    # (the spec's: trials that failed on data since fixed, under other ids, are not its now)
    failed = [{"trial": state["run"].info.run_name,
               "error": state["run"].data.tags.get(TRIAL_ERROR_TAG)}
              for trial_id, state in states.items()
              if state["status"] == FAILED and trial_id in ids]
    # (the trials of the spec as launched last: a name reused for another spec keeps the
    # other's runs in its experiment, which are not this sweep's best)
    mine = set(ids)
    finished = [state["run"] for trial_id, state in states.items()
                if state["status"] == FINISHED and trial_id in mine]
    best = min(finished, key=lambda r: r.data.metrics.get(FINAL_EVAL_LOSS, math.inf),
               default=None)
    best_per_tokenizer = _best_per_tokenizer(finished)
    if best_per_tokenizer:
        best = None  # (nats per byte against nats per token: no one best)
    return {
        "sweep": name, "status": status, "driver_gone": gone,
        "driver_error": driver_error(parent) if gone is not None else None,
        "driver": parent.data.tags.get(SWEEP_DRIVER_TAG),
        "driver_silent_s": driver_silent_s(parent, status),
        "trials": sum(counts.values()), "counts": counts, "running": running,
        "trunks_running": trunks, "trunks_stopped": stopped,
        **_trunk_positions(training, spec.storage_root),
        "failed": failed,
        "best": None if best is None else {
            "trial": best.info.run_name, TRIAL_ID_TAG: best.data.tags[TRIAL_ID_TAG],
            FINAL_EVAL_LOSS: best.data.metrics.get(FINAL_EVAL_LOSS)},
        **({"best_per_tokenizer": best_per_tokenizer} if best_per_tokenizer else {}),
        "eta_s": _eta(spec, parent, finished, counts, running, states)
        if status == RUNNING and not unreadable
        else None,
        **_tokens(_with_stopped_trunks(token_totals(client, parent.info.experiment_id),
                                       [] if status == RUNNING else trunk_runs,
                                       spec.storage_root),
                  ended=not any(counts.get(s) for s in ("pending", RUNNING, INTERRUPTED))),
        **({} if slices is None else {"slices": slices}),
        "ended_unrecorded": _ended_unrecorded(spec, states, status, counts),
        # (a launch of a narrower spec re-points the sweep: what the wider one recorded stays)
        **_outside_spec(spec, states, mine),
        **({"unreadable": unreadable} if unreadable else {}),
    }


def _outside_spec(spec: SweepSpec, states: dict, mine: set[str]) -> dict:
    """The recorded trials that are not the spec's now: `outside_spec` (of an earlier, wider
    spec) and `other_data`, those that read other data than the spec's trials would here (its
    files changed since, or this machine has others): the data's fingerprint is part of a
    trial id, and they read as an earlier spec's, beside the spec's trials all pending."""
    outside = [trial_id for trial_id in states if trial_id not in mine]
    other = 0
    if outside and spec.optuna is None and mine:
        now = {trial.cfg.data.fingerprint for trial in prepare(spec)[1]}
        other = sum(1 for trial_id in outside if states[trial_id]["run"].data.params.get(
            "data.fingerprint") not in (None, "None", *now))
    return {"outside_spec": len(outside) - other, "other_data": other}


def _best_per_tokenizer(finished: list) -> list[dict]:
    """The best finished trial of each `data.tokenizer`, where the sweep's trials use more
    than one (a loss per byte and one per BPE token are not one scale: status named a
    bytes trial the sweep's best); [] where they share one."""
    by: dict[str, list] = {}
    for run in finished:
        by.setdefault(run.data.params.get("data.tokenizer", "None"), []).append(run)
    if len(by) < 2:
        return []
    out = []
    for tokenizer, runs in sorted(by.items()):
        run = min(runs, key=lambda r: r.data.metrics.get(FINAL_EVAL_LOSS, math.inf))
        out.append({"data.tokenizer": tokenizer, "trial": run.info.run_name,
                    TRIAL_ID_TAG: run.data.tags[TRIAL_ID_TAG],
                    FINAL_EVAL_LOSS: run.data.metrics.get(FINAL_EVAL_LOSS)})
    return out


def _ended_unrecorded(spec: SweepSpec, states: dict, status: str, counts: dict) -> int:
    """Trials of a stopped grid sweep that the store holds unfinished (interrupted, running
    under a driver that is gone, failed) or not at all (pending: a tracker killed before it
    recorded their start) but whose folder says they ended: their driver lost the store
    before it could record them (`sweep resume` records them, training nothing). `status`
    counted them interrupted or pending, which read as work lost (the dry run said them
    done)."""
    unended = (INTERRUPTED, RUNNING, FAILED, "pending")
    if status == RUNNING or spec.optuna is not None or not any(
            counts.get(s) for s in unended):
        return 0
    from orchestrator.driver import ended_on_disk

    return sum(1 for trial in prepare(spec)[1]
               if states.get(trial.trial_id, {}).get("status", "pending") in unended
               and ended_on_disk(trial))


def _tokens(totals: dict[str, float], *, ended: bool) -> dict:
    """The token totals; their ratio only once every trial has ended: before, the trunks'
    tokens count trunks trained for branches not done, against the done trials alone."""
    return {"tokens_trained": int(totals[TOKENS_TRAINED]),
            "tokens_if_independent": int(totals[TOKENS_IF_INDEPENDENT]),
            "tokens_ratio": totals[TOKENS_RATIO]
            if ended and totals[TOKENS_IF_INDEPENDENT] else None}


def _progress(run, storage_root: str) -> dict:
    """A running trial's share of its budget and last loss: from its `metrics.jsonl`, where
    the folder is on this machine and is further on than the store (the tracker writes a
    trial's metrics every 10 s or more: a short trial at 98% read 45%), else as recorded."""
    budget = float(run.data.params.get(PARAM_TOKENS, "nan"))
    metrics = run.data.metrics
    folder = root_path(storage_root) / run.data.tags[TRIAL_ID_TAG]
    row = last_metrics(folder / "metrics.jsonl")
    if row is not None and row["train/tokens"] > metrics.get("train/tokens", -1.0):
        metrics = row
    if not budget > 0:  # (its params go with its first metrics)
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            budget = float(json.loads((folder / "config.json").read_text())[PARAM_TOKENS])
    seen = metrics.get("train/tokens", 0.0)
    return {"trial": run.info.run_name, TRIAL_ID_TAG: run.data.tags[TRIAL_ID_TAG],
            "progress": seen / budget if budget > 0 else None,
            "train/loss": metrics.get("train/loss")}


def _eta(spec: SweepSpec, parent, finished: list, counts: dict[str, int],
         running: list[dict], states: dict) -> float | None:
    """Seconds until the trials not done have run. A grid's: its FLOPs left at the pace of
    this launch (`orchestrator.eta`). A searched sweep's, whose trials to come are not known
    yet: the mean wall time of those finished, times those left, over those running."""
    if spec.optuna is None:
        had, total = progress_flops(prepare(spec)[1], states, share=spec.share_prefix)
        return eta_s(had, total, parent.data.tags.get(SWEEP_LAUNCH_TAG))
    done = [r for r in finished if FINAL_WALL_S in r.data.metrics]
    left = sum(n for s, n in counts.items() if s not in DONE)
    if not done or not left:
        return 0.0 if not left else None
    wall = sum(r.data.metrics[FINAL_WALL_S] for r in done)
    return wall / len(done) * left / max(len(running), 1)


def format_status(report: dict) -> str:
    """The human-readable `sweep status`."""
    gone = report.get("driver_gone")
    lines = [f"sweep {report['sweep']}: {report['status']}"
             + (f" (its driver, pid {gone}, "
                f"{'stopped on an error' if report.get('driver_error') else 'was killed'} "
                f"before it could close the sweep: `sweep resume {report['sweep']}` goes on)"
                if gone else "")
             + f", {report['trials']} trial{'s' * (report['trials'] != 1)}"]
    if gone and (error := report.get("driver_error")):
        lines.append(f"  its error: {error}")
    if silent := report.get("driver_silent_s"):
        lines.append(f"  its driver ({report.get('driver') or 'unknown'}) has not been heard "
                     f"from for {silent / 60:.0f} min: killed, lost or cut off from the store? "
                     f"If it is gone, `sweep resume {report['sweep']}` goes on")
    # (a running sweep's interrupted trials are queued to go on: as "interrupted" alone, a
    # resume read as if it had stopped them)
    again = " (to go on)" if report["status"] == RUNNING else ""
    lines.append("  " + ", ".join(f"{n} {s}{again if s == INTERRUPTED else ''}"
                                  for s, n in sorted(report["counts"].items())))
    if n := report.get("ended_unrecorded"):
        lines.append(f"  {n} of them ended in their folders (the store lost their end): "
                     f"`sweep resume {report['sweep']}` records {'it' if n == 1 else 'them'}, "
                     "training nothing")
    for r in report["running"]:
        if r["progress"] is None and r["train/loss"] is None:
            # (a running trial's metrics reach the store every 10 s or so, a short one's at
            # its end)
            lines.append(f"  running {_short_label(r['trial'])}: no metrics written yet")
            continue
        pct = f"{r['progress']:.0%}" if r["progress"] is not None else "?"
        loss = f"{r['train/loss']:.3f}" if r["train/loss"] is not None else "n/a"
        lines.append(f"  running {_short_label(r['trial'])}: {pct}, loss {loss}")
    if trunks := report.get("trunks_running"):
        at = [_trunk_at(tokens, target) for tokens, target in zip(
            report.get("trunk_tokens", []), report.get("trunk_targets", []), strict=False)
            if tokens is not None]
        lines.append(f"  {len(trunks)} trunk{'s' * (len(trunks) != 1)} training (the shared "
                     "start of token budgets, which follow as their trunk passes them)"
                     + (f": at {', '.join(at[:5])}{', ...' if len(at) > 5 else ''}"
                        if at else ""))
    stopped = report.get("trunks_stopped") or []
    if begun := [t for t in stopped if t["tokens"]]:
        one = len(begun) == 1
        tokens = ", ".join(_trunk_at(t["tokens"], t.get("target")) for t in begun[:5]) + (
            ", ..." if len(begun) > 5 else "")
        lines.append(f"  {len(begun)} trunk{'' if one else 's'} (the shared start of token "
                     f"budgets) stopped partway, at {tokens}: "
                     f"`sweep resume {report['sweep']}` goes on from {'its' if one else 'their'} "
                     "checkpoints")
    if never := len(stopped) - len(begun):  # ("stopped partway, at 0 tokens": no checkpoint)
        one = never == 1
        lines.append(f"  {never} trunk{'' if one else 's'} (the shared start of token budgets) "
                     f"stopped before {'its' if one else 'their'} first step: `sweep resume "
                     f"{report['sweep']}` trains {'it' if one else 'them'}")
    failed = report.get("failed", [])
    for r in failed[:5]:
        lines.append(f"  failed {r['trial']}: {r['error'] or 'no error recorded'}")
    if len(failed) > 5:
        lines.append(f"  ... {len(failed) - 5} more failed (sweep status NAME --json lists all)")
    if report["best"]:
        lines.append(f"  best: {_short_label(report['best']['trial'])} (eval loss "
                     f"{report['best']['final/eval_loss']:.4f})")
    for b in report.get("best_per_tokenizer", []):  # (losses in other units: one per unit)
        tokenizer = "bytes" if b["data.tokenizer"] in ("None", "null") else b["data.tokenizer"]
        lines.append(f"  best with data.tokenizer={tokenizer}: {_short_label(b['trial'])} "
                     f"(eval loss {b['final/eval_loss']:.4f}; losses of other tokenizers are "
                     "in other units)")
    for s in report.get("slices", ()):
        searched = s.get("searched") or []
        axis = next((k for k in searched if k.endswith(".lr")), None) or next(iter(searched),
                                                                               "its range")
        best = (f"none: every trial diverged (move {axis} lower with sweep extend)"
                if s.get("all_diverged") else "none yet") if s["best"] is None else (
            f"{s['best']:.4f} at " + " ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                              else f"{k}={v}"
                                              for k, v in s["best_params"].items()))
        edge = "".join(f"; at the {end} end of {key}'s range: widen it" if "choice" not in end
                       else f"; at the {end} of {key}: its optimum may lie beyond (a study's "
                       "choices are fixed: search wider ones in a new sweep)"
                       for key, end in s.get("edge", {}).items())
        tried_all = (" (every point of its space tried)" if s.get("tried_all")
                     and s["used"] < s["n_trials"] else "")
        # (asked and not told: "4/4 trials" of a stopped search read as done, where 2 were
        # interrupted and 2 never began)
        told = s.get("states", {}).get("running", 0)
        told = "" if not told else f", {told} in flight" if report["status"] == RUNNING else (
            f", {told} asked and not ended (`sweep resume` runs them)")
        # (a relaunch of the spec from before `extend` raised n_trials asks fewer than its
        # studies hold: "5/3 trials" read as a miscount)
        count = (f"{s['used']}/{s['n_trials']} trials" if s["used"] <= s["n_trials"] else
                 f"{s['used']} trials (its spec now asks {s['n_trials']}; an earlier one of "
                 "this sweep asked more)")
        lines.append(f"  slice {s['slice']}: {count}{tried_all}"
                     f"{told}, best {best}" + edge)
    if problem := report.get("unreadable"):
        lines.append(f"  its trials cannot be composed here ({problem}): the counts are the "
                     "store's records, and trials not begun are not known")
    if other := report.get("other_data"):
        one = other == 1
        lines.append(f"  {other} recorded trial{'' if one else 's'} of this sweep read other data "
                     "than its data files hold here (changed since, or other files on this "
                     "machine), so the counts above are for the data here: put that data back "
                     f"to count {'it' if one else 'them'} as done (`sweep resume` refuses to "
                     "train them again on other data)")
    if outside := report.get("outside_spec"):
        one = outside == 1
        lines.append(f"  {outside} more trial{'' if one else 's'} of earlier specs of this sweep "
                     f"{'is' if one else 'are'} recorded but not in its spec now (a launch of "
                     "another spec re-pointed it): the token totals count them and `sweep fit` "
                     "reads them; launch the wider spec again (or `sweep extend`) to take "
                     f"{'it' if one else 'them'} back in")
    if report["eta_s"]:
        lines.append(f"  ETA: {report['eta_s'] / 60:.1f} min")
    if report.get("tokens_if_independent") and report.get("tokens_ratio") is not None:
        lines.append(f"  tokens: {report['tokens_trained']:,} trained, "
                     f"{report['tokens_if_independent']:,} if independent "
                     f"(ratio {report['tokens_ratio']:.2f})")
    elif report.get("tokens_trained"):
        running = report["running"] or report.get("trunks_running")
        # (a stopped trial's tokens were not in it, though "a stopped one up to its stop"
        # read as if they were)
        lines.append(f"  tokens: {report['tokens_trained']:,} trained by the trials that have "
                     "ended and the trunks that have ended or stopped (a stopped trunk up to "
                     "its stop; "
                     + ("a stopped or running trial counts at its end, and " if running
                        or report["counts"].get(INTERRUPTED) else "")
                     + "the ratio to training each trial alone shows once every trial has "
                       "ended)")
    return "\n".join(lines)


def as_json(report: dict) -> str:
    return json.dumps(report, indent=1, default=str)
