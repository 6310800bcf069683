"""Re-sync MLflow from the trials' own run directories.

Every trial writes its end to `summary.json` (status and `final/*`) and every logged step to
`metrics.jsonl`, in its run directory, whatever the tracking server is doing. When the server
was away longer than the tracker waits for it, or a driver died between a trial's end and its
record, MLflow is behind those files. At the end of every launch (and so of `sweep resume`) the
driver compares the two and sends what is missing through the sweep's one tracker: the child run
if there is none, the history steps it lacks, the `final/*` values and the status. Trials that
never ended, or whose directory this machine cannot see, are left to run again.
"""

from __future__ import annotations

import json
import math

from orchestrator.spec import Trial
from orchestrator.worker import trial_params
from trainer.schema import DONE, FINAL_PREFIX, HISTORY_KEYS, recorded_trials


def stale_trials(trials: list[Trial], states: dict[str, dict],
                 suspect: set[str] = frozenset()) -> list[tuple[Trial, dict]]:
    """(trial, summary) of each ended trial whose MLflow record lacks its status, a `final/*`
    value of its `summary.json`, or the end of a history its `metrics.jsonl` has; and of each
    ended `suspect` trial, whose history may lack steps in its middle."""
    from trainer.paths import RunPaths, read_summary

    out = []
    for trial in trials:
        summary = read_summary(RunPaths.for_config(trial.cfg, trial.trial_id))
        if not summary or summary.get("status") not in DONE:
            continue
        state = states.get(trial.trial_id)
        if trial.trial_id in suspect or state is None or state["status"] != summary["status"] or \
                _final_keys(summary) - set(state["run"].data.metrics) or \
                _history_behind(state["run"], read_history(trial)):
            out.append((trial, summary))
    return out


def _final_keys(summary: dict) -> set[str]:
    return {k for k, v in summary.items() if k.startswith(FINAL_PREFIX)
            and isinstance(v, (int, float)) and math.isfinite(v)}


def _history_behind(run, history: list[dict]) -> bool:
    # The store keeps each metric's value at its highest step: if that is not the last
    # value the trial logged, the end of the history is missing.
    last = {}
    for row in history:
        last.update({k: v for k, v in row.items() if k in HISTORY_KEYS and v is not None})
    stored = run.data.metrics
    return any(key not in stored or not math.isclose(stored[key], value, rel_tol=1e-6)
               for key, value in last.items() if math.isfinite(value))


def read_history(trial: Trial) -> list[dict]:
    """The trial's `metrics.jsonl` rows ({"step": n, key: value, ...}); [] if none."""
    from trainer.paths import RunPaths

    path = RunPaths.for_config(trial.cfg, trial.trial_id).metrics
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resync(trials: list[Trial], tracker, *, tracking_uri: str, sweep: str,
           states: dict[str, dict] | None = None, ran: set[str] = frozenset()) -> list[str]:
    """Complete the MLflow record of every stale trial; their ids.

    Args:
        states: `recorded_trials` as this launch began, if known. Only this launch's tracker
            wrote to the sweep since, so they still hold for every trial it did not touch,
            and the store need not be read again (a second read of a thousand runs cost
            seconds) unless a trial of this launch is not among the tracker's confirmed ones.
        ran: the trials this launch handed to workers.
    """
    import ray

    ray.get(tracker.flush.remote())  # after the driver's own finish calls, in order
    confirmed = ray.get(tracker.confirmed_trials.remote())
    unconfirmed = [t for t in trials if t.trial_id not in confirmed]
    if not unconfirmed:
        # Every trial was recorded whole by this launch: nothing to read (reading a trial's
        # files imports the trainer, and torch with it: a second of the sweep's tail).
        return []
    if states is None or set(ran) - confirmed:
        states = recorded_trials(tracking_uri, sweep)
    # A trial of this launch that is not confirmed was retried or resumed: steps its lost
    # worker had not sent yet may be missing anywhere in its history, so it is always re-synced
    # (which adds only the steps the store lacks).
    stale = stale_trials(unconfirmed, states, suspect=set(ran) - confirmed)
    ray.get([tracker.resync_trial.remote(
        trial.trial_id, summary["status"], summary, trial_params(trial.cfg, summary),
        trial.label, read_history(trial)) for trial, summary in stale])
    return [trial.trial_id for trial, _ in stale]
