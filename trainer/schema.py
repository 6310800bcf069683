"""The MLflow record of sweeps and trials: names, statuses, and the few writes every writer shares.

This is the contract between whoever writes a trial's record (the trainer's own reporter, the
orchestrator's tracking actor and re-sync) and whoever reads it (`sweep status`, `sweep fit`,
the fitter). It lives in the trainer because the trainer is the one package every other may
import; it imports neither torch nor Ray, and MLflow only inside the functions that call it,
so `sweep status`, `sweep fit` and a Ray worker unpickling a tracker handle stay light.

The layout (one experiment per sweep):
- a parent run per sweep: `KIND_TAG=sweep`, the spec as artifact `SPEC_ARTIFACT`, tags
  `SWEEP_STATUS_TAG` and `SWEEP_CANCEL_TAG`;
- a child run per trial: `KIND_TAG=trial`, `PARENT_RUN_TAG`, `TRIAL_ID_TAG`,
  `TRIAL_STATUS_TAG` (one of `STATUSES`), `TRIAL_ATTEMPT_TAG`, `CODE_VERSION_TAG`,
  `TRIAL_NODE_TAG`; params: every resolved config key, dotted, plus `derived.*`; metrics:
  `HISTORY_KEYS` per optimizer step and `final/*` once;
- a fit run: `KIND_TAG=fit`, artifacts `fit.json` and `plots/`;
- a trunk run per token family that shares one (`KIND_TAG=trunk`, `PARENT_RUN_TAG`,
  `TRUNK_ID_TAG`, `TRUNK_STATUS_TAG`): the family's params without `train.tokens`, and
  `final/tokens` (tokens the trunk trained), `final/steps`, `final/wall_s`. Each trial
  records `final/tokens_trained` (by itself) and `final/tokens_shared` (from a trunk); the
  parent logs the sweep's `TOKENS_TRAINED`, `TOKENS_IF_INDEPENDENT` and `TOKENS_RATIO`
  (`token_totals`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

# -- tags ------------------------------------------------------------------------------------
KIND_TAG = "proxysweep.kind"
KIND_SWEEP, KIND_TRIAL, KIND_FIT, KIND_TRUNK = "sweep", "trial", "fit", "trunk"
PARENT_RUN_TAG = "mlflow.parentRunId"  # mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID
TRIAL_ID_TAG = "trial.id"
TRIAL_STATUS_TAG = "trial.status"
TRIAL_ATTEMPT_TAG = "trial.attempt"
TRIAL_ERROR_TAG = "trial.error"  # a failed trial's last error, first line
TRIAL_NODE_TAG = "trial.node"
TRIAL_LEGACY_ID_TAG = "trial.legacy_id"  # the id an earlier id rule gave a trial
TRUNK_ID_TAG = "trunk.id"
TRUNK_STATUS_TAG = "trunk.status"
CODE_VERSION_TAG = "code.version"
SWEEP_STATUS_TAG = "sweep.status"
SWEEP_CANCEL_TAG = "sweep.cancel"
FIT_SELECTION_TAG = "fit.selection"  # a fit run's runs: all, pooled, or KEY=VALUE of --group
SWEEP_DRIVER_TAG = "sweep.driver"  # "HOST PID" of the driver that last opened the sweep
SWEEP_DRIVER_ERROR_TAG = "sweep.driver_error"
""""HOST PID\tERROR": the error (its first line) that stopped that driver before it could
close its sweep; read by `sweep status` while `sweep.driver` still names that driver."""
SWEEP_HEARTBEAT_TAG = "sweep.heartbeat"
"""Epoch seconds, set every `HEARTBEAT_EVERY_S` by the running sweep's tracking actor (which
Ray ends with its driver): a driver on another host that has gone silent is seen by it."""
SWEEP_DRIVERS_PREFIX = "sweep.drivers."
"""`sweep.drivers.HOST PID`: epoch seconds, the heartbeat of each driver running the sweep now
(a launch and an extend typed while it runs), removed by its close. The last driver to close
ends the sweep; one that closes before another still runs leaves it running for that one."""
SWEEP_LAUNCH_TAG = "sweep.launch"
"""JSON `{"at": epoch seconds, "flops": ...}`: when the latest launch began training and the
FLOPs the sweep's trials had then (`orchestrator.eta`), for the pace `sweep status` reads."""
HEARTBEAT_EVERY_S = 60.0
DRIVER_SILENT_S = 300.0
"""A running sweep whose heartbeat is older than this: its driver is killed, lost or cut off."""
SWEEP_EXPERIMENT_TAG = "proxysweep.sweep"
"""An experiment tag, "yes" on the experiment a sweep's launch created (with it, atomically):
another launch of the sweep that finds it new and without a parent run waits for that
launch's parent rather than creating a second."""
SPEC_ARTIFACT = "sweep.yaml"

# -- trial statuses --------------------------------------------------------------------------
RUNNING, FINISHED, DIVERGED = "running", "finished", "diverged"
FAILED, PRUNED, INTERRUPTED = "failed", "pruned", "interrupted"
STATUSES = (RUNNING, FINISHED, DIVERGED, FAILED, PRUNED, INTERRUPTED)
DONE = (FINISHED, DIVERGED)
"""A trial that ended with one of these is done: it never runs again, and the fitter uses it
(a diverged trial marks an LR too high)."""
_RUN_STATUS = {FINISHED: "FINISHED", DIVERGED: "FINISHED", PRUNED: "KILLED",
               INTERRUPTED: "KILLED"}

# -- params and metrics ----------------------------------------------------------------------
PARAM_LR = "optim.lr"
PARAM_WEIGHT_DECAY = "optim.weight_decay"
PARAM_TIMESCALE = "optim.timescale"
PARAM_TOKENS = "train.tokens"
PARAM_SEQ_LEN = "train.seq_len"
PARAM_BATCH_SIZE = "train.batch_size"
DERIVED_PREFIX = "derived."
PARAM_N_PARAMS = "derived.n_params"
"""Non-embedding parameters N."""
PARAM_BATCH_TOKENS = "derived.batch_tokens"
PARAM_EFFECTIVE_WEIGHT_DECAY = "derived.weight_decay"
"""λ as trained: `optim.weight_decay`, or the one `optim.timescale` sets."""
HISTORY_KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens",
                "train/batch_tokens", "train/norm_test", "eval/loss", "perf/tokens_per_s",
                "perf/mfu")
"""Metrics logged per optimizer step."""
FINAL_PREFIX = "final/"
FINAL_EVAL_LOSS = "final/eval_loss"
FINAL_STEPS = "final/steps"
FINAL_WALL_S = "final/wall_s"
FINAL_TOKENS = "final/tokens"
FINAL_TOKENS_TRAINED = "final/tokens_trained"
"""Tokens a trial trained itself: `final/tokens` less `final/tokens_shared` from a trunk."""
TOKENS_TRAINED = "sweep/tokens_trained"
TOKENS_IF_INDEPENDENT = "sweep/tokens_if_independent"
TOKENS_RATIO = "sweep/tokens_ratio"

# -- MLflow's limits per log_batch call ------------------------------------------------------
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
"""Params, and also tags, per call."""


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of an embedded SQLite store keeps its artifacts (the sweep's
    spec, fits): beside the store's file, in `<folder>/<file stem>-artifacts/<experiment>`.
    MLflow's default is `./mlruns/<experiment id>` under whichever folder the command ran in:
    a sweep's spec then lay wherever its first launch ran, and stores launched from one folder
    shared `mlruns/1`. (The location is absolute: a store moved with its artifacts folder
    still points at the old place.) None for other stores (a server has its own artifact
    root)."""
    import hashlib
    import re
    from pathlib import Path

    prefix = "sqlite:///"
    if not uri.startswith(prefix) or len(uri) == len(prefix):
        return None
    path = Path(uri[len(prefix):]).absolute()
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", experiment).lstrip(".") or "_"
    if folder != experiment:  # two names that map to one folder keep apart
        folder += "-" + hashlib.sha1(experiment.encode()).hexdigest()[:8]
    return (path.parent / f"{path.stem}-artifacts" / folder).as_uri()


def create_experiment(client: MlflowClient, uri: str, name: str,
                      tags: dict[str, str] | None = None) -> str:
    """`client.create_experiment(name)` with its artifacts beside an SQLite store's file
    (`artifact_location`) and `tags`; the new experiment's id."""
    return client.create_experiment(name, artifact_location=artifact_location(uri, name),
                                    tags=tags)


def run_status(status: str) -> str:
    """The MLflow run status that ends a run of trial (or sweep) `status`: FINISHED for a
    finished or diverged one, KILLED for a pruned or interrupted one, FAILED otherwise."""
    return _RUN_STATUS.get(status, "FAILED")


def kind_filter(kind: str) -> str:
    """The `search_runs` filter for runs of one `KIND_TAG`."""
    return f"tags.`{KIND_TAG}` = '{kind}'"


def trial_filter(trial_id: str) -> str:
    """The `search_runs` filter for the child run of one trial."""
    return f"{kind_filter(KIND_TRIAL)} and tags.`{TRIAL_ID_TAG}` = '{trial_id}'"


def sweep_runs(client: MlflowClient, experiment_id: str, kind: str) -> list:
    """All runs of one `KIND_TAG` in an experiment (paged through)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], kind_filter(kind), max_results=1000,
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def recorded_trials(uri: str, sweep: str) -> dict[str, dict]:
    """trial id → {status, attempt, run} of every child run of a sweep (empty if unknown)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        return {}
    states = {}
    for run in sweep_runs(client, exp.experiment_id, KIND_TRIAL):
        tags = run.data.tags
        states[tags[TRIAL_ID_TAG]] = {"status": tags.get(TRIAL_STATUS_TAG, RUNNING),
                                      "attempt": int(tags.get(TRIAL_ATTEMPT_TAG, 1)),
                                      "run": run}
    return states


def find_or_create_run(client: MlflowClient, experiment_id: str, *, tags: dict[str, str],
                       name: str):
    """The run of `tags`'s kind (for a trial: with its `trial.id`) in the experiment, created
    with `tags` if there is none. Looking first makes a create safe to repeat, e.g. after one
    whose answer was lost to a server outage."""
    kind = tags[KIND_TAG]
    query = (trial_filter(tags[TRIAL_ID_TAG]) if kind == KIND_TRIAL else
             f"{kind_filter(kind)} and tags.`{TRUNK_ID_TAG}` = '{tags[TRUNK_ID_TAG]}'"
             if kind == KIND_TRUNK else kind_filter(kind))
    found = client.search_runs([experiment_id], query, max_results=1)
    if found:
        return found[0]
    return client.create_run(experiment_id, run_name=name[:250], tags=tags)


def batches(*, metrics: Sequence = (), params: Sequence = (),
            tags: Sequence = ()) -> Iterator[tuple[list, list, list]]:
    """(metrics, params, tags) chunks within MLflow's limits per `log_batch` call; one chunk
    when they fit, none when all three are empty."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        yield (metrics[:MAX_METRICS_PER_BATCH], params[:MAX_PARAMS_PER_BATCH],
               tags[:MAX_PARAMS_PER_BATCH])
        metrics, params, tags = (metrics[MAX_METRICS_PER_BATCH:],
                                 params[MAX_PARAMS_PER_BATCH:], tags[MAX_PARAMS_PER_BATCH:])


def log_batch(client: MlflowClient, run_id: str, *, metrics: Sequence = (),
              params: Sequence = (), tags: Sequence = ()) -> int:
    """`client.log_batch` in as many calls as MLflow's limits need; the number of calls."""
    calls = 0
    for m, p, t in batches(metrics=metrics, params=params, tags=tags):
        client.log_batch(run_id, metrics=m, params=p, tags=t)
        calls += 1
    return calls


def token_totals(client: MlflowClient, experiment_id: str) -> dict[str, float]:
    """Where a sweep's compute went, read from its runs (see `totals_of`)."""
    trials = [(run.data.tags.get(TRIAL_STATUS_TAG), run.data.metrics)
              for run in sweep_runs(client, experiment_id, KIND_TRIAL)]
    trunks = [run.data.metrics for run in sweep_runs(client, experiment_id, KIND_TRUNK)]
    return totals_of(trials, trunks)


def totals_of(trials: Iterable[tuple[str | None, dict]], trunks: Iterable[dict]
              ) -> dict[str, float]:
    """Tokens trained (every ended trial's own tokens, a pruned one's up to where it stopped,
    plus every trunk's), the tokens the ended trials would have trained alone, and their
    ratio; from (status, metrics) of each trial and the metrics of each trunk."""
    independent = trained = 0.0
    for status, metrics in trials:
        if status in (*DONE, PRUNED) and FINAL_TOKENS in metrics:
            independent += metrics[FINAL_TOKENS]
            trained += metrics.get(FINAL_TOKENS_TRAINED, metrics[FINAL_TOKENS])
    for metrics in trunks:
        trained += metrics.get(FINAL_TOKENS, 0.0)
    return {TOKENS_TRAINED: trained, TOKENS_IF_INDEPENDENT: independent,
            TOKENS_RATIO: trained / independent if independent else 1.0}
