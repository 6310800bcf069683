"""A searched sweep's driver killed, then `sweep resume` and `sweep status` from the command line,
as a user runs them: every study ends at exactly n_trials, in-flight trials continue under the
same Optuna trial and trial id."""

import os
import signal

import optuna
import pytest
import yaml

from orchestrator.studies import open_storage
from tests.orchestrator.test_failures import _children, _sweep, _wait

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_driver_then_resume_ends_each_study_at_exactly_n_trials(spec_dict, uri,
                                                                      tmp_path):
    spec_dict["overrides"] += ["train.eval_every_tokens=8192",
                               "train.checkpoint_every_tokens=8192"]
    spec_dict["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                         "train.batch_size": "choice(8, 16)"}
    spec_dict["search"] = {"optuna": {"n_trials": 3, "per_slice": ["train.batch_size"]}}
    spec_dict["max_concurrent"] = 2
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)

    def one_finished():
        return any(c.data.tags.get("trial.status") == "finished" for c in _children(uri)[1])

    _wait(one_finished, 240, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")  # beside mlflow.db
    names = sorted(s.study_name for s in storage.get_all_studies())
    assert names == ["unit: train.batch_size=16 seed=0", "unit: train.batch_size=8 seed=0"]
    in_flight = {(n, t.number): t.params for n in names
                 for t in optuna.load_study(study_name=n, storage=storage).trials
                 if t.state.name == "RUNNING"}
    assert in_flight  # the driver died with trials asked and not told
    # A `sweep cancel` that reaches a launch while Ray starts (its `_start` says so): the
    # summary said every point asked "already done", the ones in flight too
    from orchestrator import commands
    from orchestrator.spec_file import spec_from_dict

    told = sum(t.state.name == "COMPLETE" for n in names
               for t in optuna.load_study(study_name=n, storage=storage).trials)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "_start", lambda spec, uri, *a, **k: commands.Marked(
            uri, spec.name, before={}, cancelled=True))
        outcome = commands.launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert outcome.interrupted and outcome.already_done == told < outcome.trials

    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out + err
    _adds_up(out, 6)
    client, children = _children(uri)
    ids = {}
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert [(t.number, t.state.name) for t in trials] == [
            (0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
        for t in trials:
            if (name, t.number) in in_flight:  # not asked again: the same trial, told once
                assert t.params == in_flight[(name, t.number)]
            ids[(name, t.number)] = t.params
    assert len(children) == 6
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 6
    for child in children:  # each history one curve, nothing twice
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps))

    status = _sweep("status", "unit", uri=uri)
    out, err = status.communicate(timeout=120)
    assert status.returncode == 0, err
    assert "slice train.batch_size=8 seed=0: 3/3 trials, best " in out
    assert "slice train.batch_size=16 seed=0: 3/3 trials, best " in out

    extend = _sweep("extend", "unit", "search.optuna.n_trials=4", uri=uri)
    out, err = extend.communicate(timeout=300)
    assert extend.returncode == 0, out + err
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        assert [t.params for t in trials[:3]] == [ids[(name, n)] for n in range(3)]
    assert len(_children(uri)[1]) == 8


def test_killed_halving_driver_resumes_its_rungs_without_training_anything_twice(
        spec_dict, uri, tmp_path):
    spec_dict["overrides"] += ["train.checkpoint_every_tokens=2048"]
    spec_dict["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                         "train.tokens": "choice(4096, 8192, 16384)"}
    spec_dict["search"] = {"optuna": {"n_trials": 4, "sampler": "random", "seed": 1,
                                      "pruner": "halving"}}
    spec_dict["max_concurrent"] = 2
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    storage = f"sqlite:///{tmp_path}/optuna.db"

    def second_rung_started():
        # (its trials take a second or two: one seen ended already is as good a moment)
        try:
            study = optuna.load_study(study_name="unit: train.tokens=8192 seed=0",
                                      storage=open_storage(storage))
        except KeyError:
            return False
        return any(t.state.name in ("RUNNING", "COMPLETE") for t in study.trials)

    _wait(second_rung_started, 300, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out + err
    _adds_up(out, 7)
    rungs = [optuna.load_study(study_name=f"unit: train.tokens={t} seed=0",
                               storage=open_storage(storage)).trials
             for t in (4096, 8192, 16384)]
    assert [[t.state.name for t in r] for r in rungs] == [["COMPLETE"] * 4, ["COMPLETE"] * 2,
                                                          ["COMPLETE"]]
    best = sorted(rungs[0], key=lambda t: t.value)
    assert sorted(map(str, (t.params for t in rungs[1]))) == sorted(
        map(str, (t.params for t in best[:2])))
    client, children = _children(uri)
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 7
    for child in children:  # each history one curve, nothing twice
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps))
        assert child.data.tags["trial.attempt"] in ("1", "2")


def _adds_up(out: str, trials: int) -> None:
    """The resume's summary counts every trial once: a trial its study asked and was never
    told, recorded ended before the kill, was in neither count ("7 trials, 4 already done,
    ran 1 (1 finished)")."""
    import re

    line = next(line for line in out.splitlines() if line.startswith("sweep unit: "))
    found = re.match(r"sweep unit: (\d+) trials, (\d+) already done(?:, ran (\d+) \(.*?\))?"
                     r"(?:, (\d+) found ended in their folders)?", line)
    assert found, line
    total, done, ran, elsewhere = (int(g or 0) for g in found.groups())
    assert total == trials and done + ran + elsewhere == trials, line
