"""A searched sweep's Optuna studies, in one RDB storage, behind one owner.

One `Studies` object owns the storage while a sweep runs: a Ray actor on the driver's node (as
the tracking actor is), so that a SQLite storage has a single writer and workers on other
nodes never need to reach the database. The driver asks and tells through it; a trial's worker
reports its eval points to it and learns whether to stop (`report`). Optuna keeps everything
(trials asked, their params, intermediate values, states, values) in the storage, so a new
driver after a SIGKILL finds each study where the old one left it.

Which storage: `search.optuna.storage`, else `OPTUNA_STORAGE`, else a SQLite file `optuna.db`
beside the MLflow SQLite store (or in the sweep's `storage_root` when MLflow is a server: a
team on several machines gives a storage every driver reaches, e.g. the PostgreSQL the
deployment's MLflow uses). A
password in the URL is masked (`***`) wherever it is printed or stored; a stored spec whose
storage URL was masked that way is resumed with the real URL from `OPTUNA_STORAGE`.

What a study is told:
- a finished trial: its objective (`final/eval_loss` unless the spec says otherwise);
- a pruned trial: PRUNED (Optuna keeps its last intermediate value);
- a diverged trial: `diverged_value` below, a finite, bounded loss no better than the worst
  the study has seen, which steers GP and TPE away from that region without the outlier that
  an infinite or huge value would be for a GP's fit;
- a trial that failed after its retries: FAIL. It counts toward `n_trials` like any other.

Over a finite space (every searched axis a choice or an integer range) a sampler asks points
it has tried again; those repeats are void and untried points asked instead (`Studies.ask`),
so a study tries each point once and stops when all are tried (`exhausted`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from orchestrator.halving import DIVERGED_ATTR
from trainer.errors import ConfigError
from trainer.reporting import redact

STORAGE_ENV = "OPTUNA_STORAGE"
STORAGE_FILE = "optuna.db"


def storage_url(storage: str | None, tracking_uri: str, *, storage_root: str | Path,
                studies: Sequence[str] = ()) -> str:
    """The Optuna storage of a sweep (see the module docstring), whose studies are named
    `studies`."""
    if storage and ":***@" in storage:  # a stored spec's masked URL
        if not os.environ.get(STORAGE_ENV):
            raise ConfigError(f"search.optuna.storage={storage} was stored with its password "
                              f"masked: set {STORAGE_ENV} to the full URL to resume this sweep")
        return os.environ[STORAGE_ENV]
    if storage or os.environ.get(STORAGE_ENV):
        return storage or os.environ[STORAGE_ENV]
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return prefix + str(Path(tracking_uri[len(prefix):]).resolve().parent / STORAGE_FILE)
    # MLflow on a server: in the sweep's storage_root (absolute in its stored spec), which
    # every command of the sweep finds, from any folder. It was the working directory: a
    # `status` or `extend` run from another folder found no study there, and the extend
    # began a new one, training its n_trials again. A sweep whose studies are there still
    # (launched before) keeps them.
    url = prefix + str(Path(storage_root) / STORAGE_FILE)
    before = prefix + str(Path(STORAGE_FILE).resolve())
    if before != url and not holds(url, studies) and holds(before, studies):
        return before
    return url


def holds(url: str, studies: Sequence[str]) -> bool:
    """Does the SQLite storage at `url` (which may not exist) hold any of `studies`?"""
    if not studies or not_created(url):
        return False
    try:
        known = {s.study_name for s in open_storage(url).get_all_studies()}
    except Exception:  # noqa: BLE001 (a file of something else, another Optuna's schema: not ours)
        return False
    return bool(known & set(studies))


def open_storage(url: str):
    """An RDB storage; SQLite waits for a lock (`sweep status` reads while a driver writes)."""
    import optuna

    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        raise ConfigError(f"Optuna storage {redact(url)}: an SQLite store is sqlite:///PATH.db "
                          "(three slashes, then the file's path: sqlite:////abs/path.db for an "
                          f"absolute one); fix search.optuna.storage or {STORAGE_ENV}")
    if "://" not in url:  # a file's path where a URL belongs
        path = Path(url).expanduser().absolute()
        raise ConfigError(f"Optuna storage {redact(url)} is a path, not a database URL: give "
                          f"sqlite:///{path} in search.optuna.storage or {STORAGE_ENV}")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # sqlalchemy's errors: a bad URL, an unreachable server
        raise ConfigError(f"cannot open the Optuna storage {redact(url)} "
                          f"({type(err).__name__}): fix search.optuna.storage or "
                          f"{STORAGE_ENV}") from None


VOID_ATTR = "proxysweep.void"
"""User attribute of a study's trial that was asked but never given its values: failed, and
counted nowhere."""


def counts(frozen) -> bool:
    """Does a study's trial count toward n_trials: asked (not a startup point still waiting)
    and not void?"""
    return frozen.state.name != "WAITING" and not frozen.user_attrs.get(VOID_ATTR)


def _point(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def distinct_points(trials) -> int:
    """How many points a study's trials that count tried (repeats once)."""
    return len({_point(t.params) for t in trials if counts(t) and t.params})


def diverged_value(vocab_size: float | None, told: list[float]) -> float:
    """What a diverged trial is told: the larger of ln(vocab size) (the loss of a uniform
    guess, what a model that learned nothing scores) and the worst value told so far."""
    floor = math.log(vocab_size) if vocab_size else 0.0
    return max([floor, *[v for v in told if math.isfinite(v)]])


class Studies:
    """The studies of one sweep (run it as a Ray actor: `ray.remote(Studies)`)."""

    def __init__(self, url: str, search, names: list[str], dists: dict | None = None, *,
                 fed: Sequence[str] = (), rungs=None, in_flight: int = 1):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage, self.search, self.dists = open_storage(url), search, dists or {}
        self.in_flight = max(in_flight, 1)
        """Trials a study may have in flight at once: its start design holds that many more
        points than the model needs, so no ask made while they run falls back to a random
        draw (the model takes over after `STARTUP_TRIALS` complete)."""
        self.rungs = rungs  # `orchestrator.halving.Rungs` under halving
        self.fed = set(fed)
        """Studies whose trials are enqueued (the upper rungs of halving), not sampled."""
        self.studies: dict = {}
        self.add(names)
        self.reporting: dict[str, list[tuple[str, int]]] = {}
        """Trial id → (study, Optuna trial id) of the studies waiting on it; the first one
        receives its eval points."""

    def add(self, names: list[str]) -> None:
        """Open (or create) the studies of these slices."""
        import optuna

        from orchestrator.search_space import (
            STARTUP_TRIALS,
            make_pruner,
            make_sampler,
            sampler_seed,
            startup_points,
        )

        for name in names:
            if name in self.studies:
                continue
            study = optuna.create_study(
                study_name=name, storage=self.storage, direction="minimize",
                pruner=make_pruner(self.search, study_name=name), load_if_exists=True)
            num_trials = len(study.get_trials(deepcopy=False))
            study.sampler = make_sampler(self.search, study_name=name, num_trials=num_trials)
            if num_trials == 0 and self.search.sampler in ("gp", "tpe") and self.dists \
                    and name not in self.fed:
                # A new study of a model-based sampler starts from a Latin hypercube (waiting
                # trials, popped by its first asks).
                num = min(STARTUP_TRIALS + self.in_flight - 1, self.search.n_trials)
                seed = sampler_seed(self.search, name)
                for point in startup_points(self.dists, num, seed=seed):
                    study.enqueue_trial(point)
            self.studies[name] = study

    def open_trials(self, name: str) -> list[tuple[int, dict]]:
        """(number, params) of the study's trials asked and not told: in flight when the
        last driver stopped."""
        from optuna.trial import TrialState

        study, out = self.studies[name], []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._whole(t):
                out.append((t.number, t.params))
            else:  # asked but never given its point (its ask failed, or its driver died in
                # between): nothing to resume, so it ends failed and counts for nothing
                self._void(study, t)
        return out

    def _void(self, study, frozen) -> None:
        from optuna.trial import TrialState

        self.storage.set_trial_user_attr(frozen._trial_id, VOID_ATTR, True)
        study.tell(frozen.number, state=TrialState.FAIL)

    def _whole(self, frozen) -> bool:
        """Does an asked trial hold a value of every searched key?"""
        return all(key in frozen.params for key in self.dists)

    def used(self, name: str) -> int:
        """Trials of the study that count toward n_trials: every one asked (not those of
        its startup design still waiting to be asked)."""
        return sum(counts(t) for t in self.studies[name].get_trials(deepcopy=False))

    def room(self, name: str) -> int:
        """Trials the study may still ask, read from the storage now: another driver of the
        same sweep (a resume while the first one still runs) asks from the same count."""
        cap = self.size(name) if name in self.fed else self.search.n_trials
        return cap - self.used(name)

    def size(self, name: str) -> int:
        """Trials of the study, asked or enqueued (not void)."""
        return sum(not t.user_attrs.get(VOID_ATTR)
                   for t in self.studies[name].get_trials(deepcopy=False))

    def promote(self, below: str, above: str, quota: int) -> int | None:
        """Enqueue in study `above` the trials of `below` that climb (`orchestrator.halving`)
        and are not there yet; how many, or None while `below` is not over."""
        from orchestrator.halving import missing, survivors

        climbing = survivors(self.rungs, self.studies[below].get_trials(deepcopy=False),
                             quota=quota)
        if climbing is None:
            return None
        new = missing(climbing, self.studies[above].get_trials(deepcopy=False))
        for params in new:
            self.studies[above].enqueue_trial(params)
        return len(new)

    def ask(self, name: str, dists: dict) -> tuple[int, dict] | None:
        """A new trial of the study: (number, params); None when another driver of the sweep
        asked the study's last one first (what `room` read was gone by the ask)."""
        from optuna.trial import TrialState

        study = self.studies[name]
        in_flight = {t.number for t in study.get_trials(deepcopy=False,
                                                        states=(TrialState.RUNNING,))}
        try:
            trial = study.ask(fixed_distributions=dists)
        except Exception:
            # the trial (new, or an enqueued one it popped) was taken before its values
            # failed: it must not stay in flight
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.number not in in_flight and not self._whole(frozen):
                    self._void(study, frozen)
            raise
        # Storage gives trial numbers in order: the asks beyond the cap are the ones with the
        # largest numbers, so of two drivers racing for the last trial exactly one keeps it.
        cap = self.size(name) if name in self.fed else self.search.n_trials
        before = [t for t in study.get_trials(deepcopy=False) if t.number <= trial.number]
        if sum(counts(t) for t in before) > cap:
            self._void(study, before[-1])
            return None
        if name not in self.fed:
            number = self._untried(study, trial.number, dists)
            if number is None:
                return None
            trial = study.get_trials(deepcopy=False)[number]
        return trial.number, dict(trial.params)

    def _untried(self, study, number: int, dists: dict) -> int | None:
        """Over a finite space (`all_points`), the number of an asked trial at a point the
        study has not tried: a sampler asks tried points again (over 3 choices, 6 trials of
        TPE tried 2 of them, the other 4 told from their records but each counted toward
        n_trials). A repeat is void (it counts for nothing) and a point not tried yet, in a
        seeded order, is enqueued and asked instead; None when every point is tried."""
        import random

        from orchestrator.search_space import all_points, sampler_seed

        points = all_points(dists)
        if points is None:
            return number
        order = random.Random(sampler_seed(self.search, study.study_name)).sample(
            points, len(points))
        while True:
            trials = study.get_trials(deepcopy=False)
            tried = {_point(t.params) for t in trials
                     if t.number != number and counts(t) and self._whole(t)}
            if _point(trials[number].params) not in tried:
                return number
            self._void(study, trials[number])
            waiting = {_point(t.params) for t in trials if t.state.name == "WAITING"}
            untried = next((p for p in order if _point(p) not in tried | waiting), None)
            if untried is None and not waiting:
                return None  # every point of the space is tried
            if untried is not None:
                study.enqueue_trial(untried)
            number = study.ask(fixed_distributions=dists).number  # (the oldest waiting)

    def exhausted(self, name: str) -> bool:
        """Has the study tried every point of a finite space (`all_points`)?"""
        from orchestrator.search_space import finite_points

        if name in self.fed or (points := finite_points(self.dists)) is None:
            return False
        return distinct_points(self.studies[name].get_trials(deepcopy=False)) >= points

    def watch(self, trial_id: str, name: str, number: int) -> None:
        """The study's trial `number` waits on our trial `trial_id` (for `report`)."""
        study = self.studies[name]
        frozen = study.get_trials(deepcopy=False)[number]
        self.reporting.setdefault(trial_id, []).append((name, frozen._trial_id))

    def report(self, trial_id: str, step: int, value: float) -> bool:
        """A worker's eval point: record it; whether the study's pruner stops the trial."""
        import optuna

        waiting = self.reporting.get(trial_id)
        if not waiting or not math.isfinite(value):
            return False
        name, storage_id = waiting[0]
        trial = optuna.trial.Trial(self.studies[name], storage_id)
        if step in self.storage.get_trial(storage_id).intermediate_values:
            return False  # a resumed attempt re-reports the eval points after its checkpoint
        trial.report(value, step)
        return trial.should_prune()

    def tell(self, name: str, number: int, outcome: str, value: float | None = None,
             vocab_size: float | None = None) -> float | None:
        """End trial `number` of the study with `outcome` (complete, diverged, pruned or
        fail); the study's best value afterwards."""
        import optuna
        from optuna.trial import TrialState

        study = self.studies[name]
        if outcome == "diverged":
            told = [t.value for t in study.get_trials(deepcopy=False,
                                                      states=(TrialState.COMPLETE,))]
            outcome, value = "complete", diverged_value(vocab_size, told)
            storage_id = study.get_trials(deepcopy=False)[number]._trial_id
            if not study.get_trials(deepcopy=False)[number].state.is_finished():
                optuna.trial.Trial(study, storage_id).set_user_attr(DIVERGED_ATTR, True)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                 "fail": TrialState.FAIL}[outcome]
        study.tell(number, value if state == TrialState.COMPLETE else None, state=state,
                   skip_if_finished=True)
        told = (name, study.get_trials(deepcopy=False)[number]._trial_id)
        for trial_id, waiting in list(self.reporting.items()):
            self.reporting[trial_id] = [w for w in waiting if w != told]
            if not self.reporting[trial_id]:
                del self.reporting[trial_id]
        return best(study)


    def best_params(self, name: str) -> dict:
        """The params of the study's best trial ({} before its first complete trial)."""
        from optuna.trial import TrialState

        done = learned(self.studies[name].get_trials(deepcopy=False,
                                                     states=(TrialState.COMPLETE,)))
        return dict(min(done, key=lambda t: t.value).params) if done else {}


def best(study) -> float | None:
    """The study's best value so far (None before its first complete trial that did not
    diverge: a diverged one is told a stand-in worst value)."""
    from optuna.trial import TrialState

    done = learned(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return min(t.value for t in done) if done else None


def learned(complete: list) -> list:
    """The complete trials that did not diverge: a diverged one is told a stand-in worst
    value (`diverged_value`), which is no loss to call a study's best."""
    return [t for t in complete if not t.user_attrs.get(DIVERGED_ATTR)]


def not_created(url: str) -> bool:
    """Is `url` an SQLite storage whose file does not exist yet? Read-only callers (a dry
    run, `sweep status`) then find no study, and create no file."""
    prefix = "sqlite:///"
    return url.startswith(prefix) and not Path(url[len(prefix):]).exists()


def stored_trials(url: str, names: list[str]) -> dict[str, list]:
    """Per study (read only): its trials as Optuna FrozenTrials, none for a study not
    created yet."""
    import optuna

    if not_created(url):
        return {name: [] for name in names}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    known = {s.study_name for s in storage.get_all_studies()}
    return {name: optuna.load_study(study_name=name, storage=storage).get_trials(
        deepcopy=False) if name in known else [] for name in names}


def summaries(url: str, names: list[str]) -> dict[str, dict]:
    """Per study (read only): trials used, by state, the distinct points they tried, the
    params of those asked and not told (in flight, or left so by a stopped driver), and the
    best so far with its params."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None if not_created(url) else open_storage(url)
    known = {s.study_name for s in storage.get_all_studies()} if storage else set()
    out = {}
    for name in names:
        if name not in known:
            out[name] = {"used": 0, "states": {}, "distinct": 0, "open_params": [], "best": None,
                         "best_params": None, "all_diverged": False}
            continue
        trials = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False) if counts(t)]
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        done = [t for t in trials if t.state.name == "COMPLETE"]
        top = min(learned(done), key=lambda t: t.value, default=None)
        out[name] = {"used": len(trials), "states": states, "distinct": distinct_points(trials),
                     "open_params": [t.params for t in trials if t.state.name == "RUNNING"],
                     "best": None if top is None else top.value,
                     "best_params": None if top is None else top.params,
                     "all_diverged": bool(done) and top is None}
    return out
