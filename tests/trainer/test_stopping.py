"""A stop asked for while a run trains (Ctrl-C, SIGTERM, a sweep's cancel): the step in
progress ends and is saved, then the run stops; resumed, it ends as the run never stopped
would have, with no step trained twice. Lone runs, fused groups and trunks alike."""

import json
import os
import signal
from pathlib import Path

import pytest

from tests.trainer.test_fused import MEMBERS, one_thread  # noqa: F401 (autouse: one thread)
from tests.trainer.test_fused import _cfg as _member_cfg
from tests.trainer.test_trunk import _cfg as _trunk_cfg
from tests.trainer.test_trunk import _point
from trainer.errors import Terminated
from trainer.fused import run_group
from trainer.loop import run
from trainer.paths import saved_steps
from trainer.reporting import JsonlReporter
from trainer.trunk import train_trunk


class _SignalledAt(JsonlReporter):
    """A run's history, and a signal to this process when the metrics of `step` come (as
    Ctrl-C lands in the middle of a step)."""

    def __init__(self, path: Path, step: int, sig: int = signal.SIGINT):
        super().__init__(path, echo=False)
        self.step, self.sig = step, sig

    def log_metrics(self, metrics, *, step):
        super().log_metrics(metrics, step=step)
        if step == self.step:
            os.kill(os.getpid(), self.sig)


def _history(path: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_saves_its_step_and_resumes_as_if_never_stopped(tmp_path, sig):
    cfg = _member_cfg(tmp_path / "stop", "train.checkpoint_every_tokens=8192")
    reference = run(_member_cfg(tmp_path / "ref", "train.checkpoint_every_tokens=8192"))
    run_dir = tmp_path / "stop" / reference.run_dir.name
    with pytest.raises(Terminated if sig == signal.SIGTERM else KeyboardInterrupt):
        run(cfg, _SignalledAt(run_dir / "metrics.jsonl", step=21, sig=sig))
    # Stopped after step 21 (checkpoints every 16 steps: 16 was the last before), saved there.
    assert saved_steps(run_dir / "checkpoints") == [16, 21]
    assert not (run_dir / "summary.json").exists()
    resumed = run(cfg)
    assert _history(run_dir / "metrics.jsonl") == _history(reference.run_dir / "metrics.jsonl")
    assert resumed.final_eval_loss == reference.final_eval_loss


def test_a_stopped_group_saves_every_member_at_its_step(tmp_path):
    cadence = ["train.checkpoint_every_tokens=4096", "train.eval_every_tokens=8192"]
    reference = run_group([_member_cfg(tmp_path / "ref", *m, *cadence) for m in MEMBERS[:3]])
    cfgs = [_member_cfg(tmp_path / "stop", *m, *cadence) for m in MEMBERS[:3]]
    reporters = [JsonlReporter(tmp_path / "stop" / r.run_dir.name / "metrics.jsonl",
                               echo=False) for r in reference]
    reporters[1] = _SignalledAt(reporters[1].path, step=19)
    with pytest.raises(KeyboardInterrupt):
        run_group(cfgs, reporters)
    for r in reference:
        assert saved_steps(tmp_path / "stop" / r.run_dir.name / "checkpoints")[-1] == 19
    resumed = run_group(cfgs)
    for got, ref in zip(resumed, reference, strict=True):
        assert _history(got.run_dir / "metrics.jsonl") == _history(ref.run_dir / "metrics.jsonl")
        assert got.final_eval_loss == ref.final_eval_loss


def test_a_stopped_trunk_saves_its_step_and_its_index_names_it(tmp_path):
    cfgs = {d: _trunk_cfg(tmp_path, d) for d in (8192, 32768)}
    points = [_point(c) for c in cfgs.values()]
    reference = train_trunk(cfgs[32768], trunk_id="t", directory=tmp_path / "ref",
                            branch_points=points)
    directory = tmp_path / "stop"
    with pytest.raises(KeyboardInterrupt):
        train_trunk(cfgs[32768], trunk_id="t", directory=directory, branch_points=points,
                    reporter=_SignalledAt(tmp_path / "seen.jsonl", step=30))
    index = json.loads((directory / "trunk.json").read_text())
    assert index["steps"] == 30 and "step-000000030" in index["checkpoints"]
    assert saved_steps(directory / "checkpoints")[-1] == 30
    again = train_trunk(cfgs[32768], trunk_id="t", directory=directory, branch_points=points)
    assert again["steps"] == reference["steps"] and again["points"] == reference["points"]
    assert _history(directory / "metrics.jsonl") == _history(tmp_path / "ref" / "metrics.jsonl")
