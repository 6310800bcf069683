import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from trainer.compose import compose
from trainer.loop import run

ROOT = Path(__file__).parents[2]
SMALL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "model.depth=2", "data=synthetic", "data.num_tokens=300_000",
         "train.batch_size=8", "train.seq_len=64", "schedule=wsd",
         "schedule.warmup_tokens=2048", "optim.lr=0.01", "train.eval_tokens=8192"]


def _trainer(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


@pytest.mark.slow
def test_pulse_python_m_trainer_learns(tmp_path):
    # The real entry point on the real offline corpus: a 2-layer, 32-wide model.
    proc = _trainer(["model=tiny", "model.width=32", "model.head_dim=16",
                     "model.base_width=32", "train.tokens=300_000", "train.batch_size=16",
                     "train.seq_len=64", "optim.lr=0.01", f"storage_root={tmp_path}"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["final/tokens"] == 300_000 // 1024 * 1024
    # Uniform over bytes is ln 256 = 5.55; a model that learned nothing stays there.
    assert summary["final/eval_loss"] < 3.5
    losses = [loss for _, loss in _losses(run_dir)]
    assert losses[-1] < losses[0] - 1.5
    assert "run directory" in out


def test_huge_lr_diverges_fast(tmp_path):
    cfg = compose(SMALL + ["optim.lr=30", "schedule=constant", "schedule.warmup_tokens=0",
                           "optim.grad_clip=0", "train.tokens=200_000", f"storage_root={tmp_path}"])
    result = run(cfg)
    assert result.status == "diverged"
    assert result.summary["final/diverged_at_tokens"] <= 20 * 8 * 64
    assert result.summary["final/eval_loss"] is None  # no final evaluation of a dead run
    # It stopped where it diverged: no step was trained or logged after it.
    steps = result.summary["final/steps"]
    assert steps <= 20 and max(step for step, _ in _losses(result.run_dir)) == steps


def test_an_lr_that_kills_the_network_is_diverged_not_finished(tmp_path):
    """LR 1e6 saturates every unit: the loss sits at ln V with no gradient at all, below
    divergence_factor × the first loss, and the run used to end `finished`: a finite point
    at the top of an LR sweep."""
    cfg = compose(["model=tiny", "data=synthetic", "optim.lr=1e6", "schedule=constant",
                   "schedule.warmup_tokens=0", "train.tokens=32768", f"storage_root={tmp_path}"])
    result = run(cfg)
    assert result.status == "diverged"
    assert result.summary["final/steps"] == 2  # its first step with no gradient


@pytest.mark.parametrize("lr", ["0.01", "30"])
def test_losses_read_every_few_steps_give_the_run_that_reads_every_step(tmp_path, monkeypatch,
                                                                         lr):
    """On CUDA the loop leaves losses on the device and reads them every few steps
    (`settle_every`). Forced on CPU: the same metrics, summary and, for a run that diverges,
    the same step and token count as the run that reads each step."""
    import trainer.loop as loop

    def trained(root: Path, every: int):
        monkeypatch.setattr(loop, "settle_every", lambda device: every)
        cfg = compose(SMALL + [f"optim.lr={lr}", "optim.grad_clip=0", "train.tokens=40_960",
                               "train.eval_every_tokens=16_384", "train.log_every_steps=7",
                               "train.checkpoint_every_tokens=12_288", f"storage_root={root}"])
        result = run(cfg)
        rows = [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
                for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        summary = {k: v for k, v in result.summary.items() if "wall_s" not in k}
        saved = result.run_dir / "checkpoints"
        return result.status, summary, rows, sorted(
            p.name for p in saved.iterdir()) if saved.exists() else []

    each, batched = trained(tmp_path / "each", 1), trained(tmp_path / "batched", 16)
    assert batched == each
    assert each[0] == ("finished" if lr == "0.01" else "diverged")
    if each[0] == "diverged":  # inside the first batch of 16: the steps after it are dropped
        assert each[1]["final/steps"] < 16
        assert each[1]["final/diverged_at_tokens"] == each[1]["final/steps"] * 8 * 64


def test_finished_run_is_not_trained_again(tmp_path):
    cfg = compose(SMALL + ["train.tokens=16384", f"storage_root={tmp_path}"])
    first = run(cfg)
    assert first.status == "finished" and first.summary["final/steps"] == 32
    mtime = (first.run_dir / "metrics.jsonl").stat().st_mtime_ns
    again = run(cfg)
    assert again.summary == first.summary
    assert (first.run_dir / "metrics.jsonl").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_sigkill_and_restart_gives_identical_losses(tmp_path):
    args = SMALL + ["train.tokens=204800", "train.log_every_steps=1",
                    "train.checkpoint_every_tokens=25600", "train.eval_every_tokens=51200"]
    reference = _trainer(args + [f"storage_root={tmp_path / 'ref'}"])
    assert reference.wait(timeout=300) == 0
    (ref_dir,) = (tmp_path / "ref").iterdir()

    killed = _trainer(args + [f"storage_root={tmp_path / 'kill'}"])
    run_dir = tmp_path / "kill" / ref_dir.name  # same config, same id
    deadline = time.monotonic() + 300
    while True:  # kill between checkpoints, once one exists
        assert killed.poll() is None, "run ended before it could be killed"
        assert time.monotonic() < deadline
        steps = _losses(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if (run_dir / "checkpoints").exists() and steps and steps[-1][0] % 50 > 10 \
                and steps[-1][0] > 120:
            break
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (run_dir / "summary.json").exists()

    resumed = _trainer(args + [f"storage_root={tmp_path / 'kill'}"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming at step" in out
    assert _losses(run_dir) == _losses(ref_dir)  # exact, step by step, no duplicates
    ref = json.loads((ref_dir / "summary.json").read_text())
    got = json.loads((run_dir / "summary.json").read_text())
    assert got["final/eval_loss"] == ref["final/eval_loss"]


def test_mlflow_reporting_and_resume_into_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose(SMALL + ["train.tokens=16384", f"storage_root={tmp_path}",
                           f"tracking.uri={uri}", "tracking.experiment=unit"])
    result = run(cfg)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("unit")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.data.tags["trial.id"] == result.run_id
    assert found.data.tags["trial.status"] == "finished"
    assert float(found.data.params["optim.lr"]) == 0.01
    assert int(found.data.params["derived.total_steps"]) == 32
    assert found.data.metrics["final/eval_loss"] == pytest.approx(result.final_eval_loss)
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == [10, 20, 30, 32]
    assert all(math.isfinite(m.value) for m in history)


def test_a_pruner_stops_the_run_at_an_eval_point_and_a_later_run_continues_it(tmp_path):
    cfg = compose(SMALL + ["train.tokens=32768", "train.eval_every_tokens=8192",
                           f"storage_root={tmp_path}"])
    asked = []

    def pruner(point: int, eval_loss: float) -> bool:
        asked.append((point, eval_loss))
        return point == 2  # stop at the second eval point

    pruned = run(cfg, pruner=pruner)
    assert pruned.status == "pruned"
    assert [p for p, _ in asked] == [1, 2] and all(math.isfinite(v) for _, v in asked)
    assert pruned.summary["final/tokens"] == 16384 and pruned.summary["final/eval_loss"] is None
    assert json.loads((pruned.run_dir / "summary.json").read_text())["status"] == "pruned"
    rows = [json.loads(x) for x in (pruned.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval/loss"] for r in rows if "eval/loss" in r] == [v for _, v in asked]

    whole = run(cfg)  # asked for again without a pruner: from the checkpoint at the stop
    assert whole.status == "finished" and whole.summary["final/tokens"] == 32768
    rows = [json.loads(x) for x in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/loss" in r]  # one history, nothing twice
    assert steps == sorted(set(steps)) and steps[0] == 10 and steps[-1] == 32768 // (8 * 64)


@pytest.mark.parametrize("max_norm", [0.5, 1e9, math.inf], ids=["clips", "coef-1", "no-clip"])
def test_cpu_clipping_is_clip_grad_norm_bit_for_bit(tmp_path, max_norm):
    """On CPU the trainer skips the multiply by a clip coefficient of 1; every gradient and the
    norm it reports stay those of `clip_grad_norm_`."""
    import copy

    import torch

    from trainer.loop import TrainingRun
    from trainer.reporting import NullReporter

    training = TrainingRun(compose(SMALL + [f"storage_root={tmp_path}", "train.tokens=65536",
                                            "train.device=cpu"]), reporter=NullReporter())
    gen = torch.Generator().manual_seed(0)
    for p in training.model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 0.1
    reference = copy.deepcopy(training.model)
    for ours, theirs in zip(training.model.parameters(), reference.parameters(), strict=True):
        theirs.grad = ours.grad.clone()
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
    assert training._clip_gradients(max_norm) == expected
    for ours, theirs in zip(training.model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad)


def test_a_compile_mode_misspelt_in_the_environment_is_one_sentence_before_any_work(
        tmp_path, monkeypatch):
    from trainer.errors import ConfigError

    monkeypatch.setenv("PROXYSWEEP_COMPILE_MODE", "reduce_overhead")
    with pytest.raises(ConfigError) as caught:
        run(compose(SMALL + [f"storage_root={tmp_path}"]))
    assert str(caught.value) == (
        "PROXYSWEEP_COMPILE_MODE=reduce_overhead is not a torch.compile mode: give one of "
        "default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs, or unset it")
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_run_dir_or_checkpoint_dir_holding_another_config_is_refused(tmp_path):
    """An explicit run_dir once let another config report a finished run's result as its own,
    or resume another config's checkpoint (and end 'finished' past its own budget)."""
    from trainer.errors import ConfigError
    from trainer.identity import config_id

    short = SMALL + ["train.tokens=4096", "train.checkpoint_every_tokens=2048"]
    first = run(compose(short + [f"run_dir={tmp_path}/a", f"checkpoint_dir={tmp_path}/ck"]))
    assert first.status == "finished"
    other = compose(short + ["optim.lr=0.003", f"run_dir={tmp_path}/a"])
    with pytest.raises(ConfigError) as caught:
        run(other)
    assert str(caught.value) == (
        f"run_dir={tmp_path}/a holds run {first.run_id[:12]}, not this config's "
        f"{config_id(other)[:12]}: give another run_dir, or leave it unset (each run then has "
        "its own folder, storage_root/<config id>)")
    other = compose(short + ["optim.lr=0.003", f"run_dir={tmp_path}/b",
                             f"checkpoint_dir={tmp_path}/ck"])
    with pytest.raises(ConfigError, match=rf"checkpoint_dir={tmp_path}/ck holds checkpoints of "
                                          rf"run {first.run_id[:12]}, not this config's"):
        run(other)
    assert not (tmp_path / "b" / "summary.json").exists()
    # The same config in its own folders is its own run: it ended, nothing is trained.
    again = run(compose(short + [f"run_dir={tmp_path}/a", f"checkpoint_dir={tmp_path}/ck"]))
    assert again.summary == first.summary
    # From the command line: the refusal, without first saying the other run "has ended"
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "trainer", *short, "optim.lr=0.003",
                           f"run_dir={tmp_path}/a"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: run_dir={tmp_path}/a holds run {first.run_id[:12]}")


def test_a_budget_far_from_whole_batches_is_noted_and_still_valid():
    from trainer.validation import notes, problems

    cfg = compose(SMALL + ["train.tokens=20479"])
    batch = cfg.train.batch_size * cfg.train.seq_len
    assert problems(cfg, network=False) == []  # (valid before: its trials stay resumable)
    below = 20479 // batch * batch
    assert notes(cfg) == [
        f"train.tokens=20479 is not a whole number of batches ({batch} tokens): the run stops "
        f"{20479 - below:,} tokens short of it, before its schedule ends; {below + batch} or "
        f"{below} would not"]
    assert notes(compose(SMALL + [f"train.tokens={batch * 200 + 1}"])) == []  # rounding
    assert notes(compose(["train.tokens=1000000"])) == []  # the default: 0.06% short
    # under one batch the run cannot start (a problem): not "2048 or 0 would not"
    assert notes(compose(["train.tokens=1000"])) == []
    # A warmup past the start of the decay: the peak LR is never reached.
    cfg = compose(SMALL + ["train.tokens=32768", "schedule.decay_fraction=0.1",
                           "schedule.warmup_tokens=30000"])
    assert notes(cfg) == ["schedule.warmup_tokens=30000 reaches into the decay, which starts "
                          "at 29,491 tokens: the run never trains at its peak LR; set "
                          "schedule.warmup_tokens below 29491 (e.g. 3276) to reach it"]
    # A decay shorter than half a batch: no step read its LR there, the run ended at its peak
    # LR (a halving rung, a tiny test budget), and nothing said so.
    assert notes(compose(["data=synthetic", "train.tokens=4096"])) == [
        "schedule.decay_fraction=0.1 of train.tokens=4,096 is a decay of 409 tokens, and a run "
        "of 2 steps of 2,048 tokens takes the LR at each batch's middle: no step trains in "
        "the decay: the run ends at its peak LR; train.tokens=32,768 (whole batches) or a "
        "larger schedule.decay_fraction gives it two steps"]
    assert not [n for n in notes(compose(["train.tokens=32768"])) if "decay" in n]
    assert "one step trains in the decay: it is one lower LR, not a curve" in notes(
        compose(["train.tokens=20480"]))[0]
    assert notes(compose(["train.tokens=40960"])) == []
    # a budget between whole batches: the one named gives two steps (43,000 was past the
    # "40,960 or more" it was told, and still had one)
    (said,) = [n for n in notes(compose(["train.tokens=43000"])) if "decay" in n]
    assert "train.tokens=43,008 (whole batches)" in said
    assert not [n for n in notes(compose(["train.tokens=43008"])) if "decay" in n]
    assert notes(compose(["schedule=wsd", "train.tokens=16384",
                          "schedule.decay_fraction=0.25"])) == []
    # Cosine and linear decay over the whole budget, under the warmup too: a long one never
    # reaches optim.lr, and was not said.
    cosine = compose(["schedule=cosine", "schedule.warmup_tokens=900_000",
                      "train.tokens=1_000_000"])
    assert notes(cosine) == [
        "schedule.warmup_tokens=900,000 of train.tokens=1,000,000: the cosine decay spans the "
        "whole budget, under the warmup too, so the LR peaks at 0.31 × optim.lr; a warmup of "
        "100,000 (a tenth) reaches 0.98"]
    assert notes(compose(["schedule=cosine", "train.tokens=1_000_000"])) == []
    assert notes(compose(["schedule=linear", "schedule.warmup_tokens=100_000",
                          "train.tokens=1_000_000"])) == []  # peaks at 0.90


def test_a_split_shorter_than_one_sequence_is_one_sentence(tmp_path):
    """A held-out split of one token gave a finished run with eval loss NaN."""
    from trainer.errors import ConfigError

    (tmp_path / "small.txt").write_text("hello world!")
    cfg = compose(["model=tiny", "data=files", f"data.paths=[{tmp_path / 'small.txt'}]",
                   f"data.cache_dir={tmp_path / 'cache'}", "train.tokens=8192",
                   "train.seq_len=4", "train.batch_size=8", "train.eval_tokens=4",
                   f"storage_root={tmp_path / 'runs'}"])
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    # (one .txt file: its eval split is its tail, too short before anything is read)
    assert str(caught.value) == (
        f"data.paths: the held-out 0.05 of {tmp_path / 'small.txt'} is 1 bytes at most, too "
        "few for one eval sequence of train.seq_len=4 tokens plus one: raise "
        "data.holdout_fraction, add data, or lower train.seq_len")


def test_a_run_kept_under_the_id_of_its_paths_as_written_is_not_trained_again(
        tmp_path, monkeypatch):
    """A run on `data/a.txt` finished by a version whose ids held the paths as written keeps
    its folder (renamed to the id now) and its result; run again, it trains nothing."""
    from trainer.identity import written_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a line of text to learn from\n" * 3000)
    cfg = compose([o for o in SMALL if not o.startswith("data")] + [
        "data=files", "data.paths=[data/a.txt]", "train.tokens=8192",
        f"storage_root={tmp_path / 'runs'}"])
    first = run(cfg)
    old = written_id(cfg)
    assert first.status == "finished" and old != first.run_id
    (tmp_path / "runs" / first.run_id).rename(tmp_path / "runs" / old)
    for name in ("summary.json", "config.json"):  # as that version wrote them
        path = tmp_path / "runs" / old / name
        path.write_text(json.dumps({**json.loads(path.read_text()), "trial.id": old}))
    rows = (tmp_path / "runs" / old / "metrics.jsonl").read_text()

    again = run(cfg)
    assert (again.run_id, again.status) == (first.run_id, "finished")
    assert again.summary["final/eval_loss"] == first.summary["final/eval_loss"]
    assert (again.run_dir / "metrics.jsonl").read_text() == rows  # nothing trained
    assert not (tmp_path / "runs" / old).exists()
    assert json.loads((again.run_dir / "summary.json").read_text())["trial.legacy_id"] == old


def test_a_run_whose_every_checkpoint_is_damaged_trains_again_from_its_start(tmp_path,
                                                                              capsys):
    """Each damaged checkpoint is set aside; with none left the run failed as a config error
    (not retried in a sweep) and needed a second resume to train from its start."""
    cfg = compose(SMALL + ["train.tokens=16384", "train.checkpoint_every_tokens=4096",
                           "train.keep_checkpoints=2", f"storage_root={tmp_path}"])
    whole = run(dataclasses.replace(cfg, storage_root=str(tmp_path / "whole")))
    first = run(cfg)
    (first.run_dir / "summary.json").unlink()  # as if it stopped after its last checkpoint
    saved = sorted((first.run_dir / "checkpoints").iterdir())
    assert len(saved) == 2
    for path in saved:
        (path / "train_state.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()

    again = run(cfg)
    assert again.status == "finished"
    assert again.summary["final/eval_loss"] == whole.summary["final/eval_loss"]
    assert _losses(again.run_dir) == _losses(whole.run_dir)  # from step 1, each once
    assert "training it from its start" in capsys.readouterr().err
    assert len(list((first.run_dir / "checkpoints").glob(".step-*.damaged"))) == 2
