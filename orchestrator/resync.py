"""Re-sync MLflow from the trials' own run directories.

Every trial writes its end to `summary.json` (status and `final/*`) and every logged step to
`metrics.jsonl`, in its run directory, whatever the tracking server is doing. A trial's record
in MLflow may lack some of it when its worker was lost (what it had not sent yet), when it was
resumed from a checkpoint, when its trainer found it ended before and reported nothing, or when
the server was away longer than the tracker waits for it. At the end of every launch (and so of
`sweep resume`) the driver hands such trials here, and what their files have and the store
lacks goes through the sweep's one tracker: the child run if there is none, the history steps,
the `final/*` values and the status. Trials that never ended, or whose directory this machine
cannot see, are left to run again.
"""

from __future__ import annotations

from orchestrator.trials import Trial
from orchestrator.worker import trial_params
from trainer.schema import DONE


def read_history(trial: Trial) -> list[dict]:
    """The trial's `metrics.jsonl` rows ({"step": n, key: value, ...}); [] if none."""
    from trainer.paths import RunPaths

    path = RunPaths.for_config(trial.cfg, trial.trial_id).metrics
    if not path.exists():
        return []
    from trainer.reporting import metrics_row

    return [row for line in path.read_text().splitlines() if (row := metrics_row(line)) is not None]


def resync(trials: list[Trial], tracker, ended: tuple[str, ...] = DONE, *,
           gaps: list[Trial] = ()) -> list[str]:
    """Complete the MLflow record of each of `trials` that has ended (its `summary.json` says
    one of `ended`: finished or diverged, and for a searched sweep pruned too) from its run
    directory; their ids. Only the steps the store lacks are added. The others of `trials`
    (stopped, lost), and `gaps` (trials resumed from a checkpoint, whose earlier attempt may
    have stopped before its worker sent its last steps), get the history steps they lack,
    their status left as it is."""
    import ray

    if not trials and not gaps:  # reading a trial's files imports the trainer, and torch
        return []
    from trainer.paths import RunPaths, read_summary

    summaries = {trial.trial_id: read_summary(RunPaths.for_config(trial.cfg, trial.trial_id))
                 for trial in trials}
    done = [(trial, summary) for trial in trials
            if (summary := summaries[trial.trial_id]) and summary.get("status") in ended]
    refs = [tracker.resync_trial.remote(
        trial.trial_id, summary["status"], summary, trial_params(trial.cfg, summary),
        trial.label, read_history(trial)) for trial, summary in done]
    whole = {trial.trial_id for trial, _ in done}
    for trial in [*trials, *gaps]:
        if trial.trial_id not in whole and (history := read_history(trial)):
            whole.add(trial.trial_id)  # (once: a trial in both lists)
            refs.append(tracker.fill_history.remote(trial.trial_id, history))
    ray.get(refs)
    return [trial.trial_id for trial, _ in done]
