"""Fused trial groups: the stacked model and AdamW against their unstacked selves, and a group's
members against their independent runs (losses, eval, files, divergence, resume)."""

import copy
import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
import torch.nn.functional as F

from trainer import branching
from trainer.compose import compose
from trainer.config import HiddenWeightDecay, OptimConfig
from trainer.errors import ConfigError
from trainer.fusable import fusion_problems, group_key
from trainer.fused import FusedRun, member_losses, run_group
from trainer.fused_model import StackedGPT
from trainer.fused_optim import StackedAdamW, clip_grad_norms_
from trainer.identity import config_id
from trainer.loop import TrainingRun, run
from trainer.model import GPT, GPTShape
from trainer.mup import param_groups, set_lr
from trainer.paths import RunPaths, saved_steps
from trainer.reporting import JsonlReporter, NullReporter
from trainer.trunk import TrunkRun, train_trunk, train_trunk_group

SMALL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "model.depth=2", "data=synthetic", "data.num_tokens=300_000",
         "train.batch_size=8", "train.seq_len=64", "schedule=wsd",
         "schedule.warmup_tokens=2048", "optim.lr=0.01", "train.eval_tokens=8192",
         "train.tokens=16384", "train.log_every_steps=1"]

MEMBERS = [["optim.lr=0.003"], ["optim.lr=0.01", "optim.weight_decay=0.1"],
           ["optim.lr=0.03", "schedule.warmup_tokens=4096", "schedule.decay_fraction=0.2"],
           ["optim.lr=0.01", "optim.timescale=0.5"]]
"""Members of one group: an LR sweep plus weight decay, a timescale and schedule keys."""


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cfg(root: Path, *overrides: str):
    return compose(SMALL + [f"storage_root={root}", *overrides])


def _history(run_dir: Path, key: str = "train/loss") -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def _shape(width: int = 64) -> GPTShape:
    cfg = compose(SMALL + [f"model.width={width}"]).model  # m = width / 32
    return GPTShape(cfg, vocab_size=16)


def _members(shape: GPTShape, num: int) -> list[GPT]:
    torch.manual_seed(0)
    return [GPT(shape) for _ in range(num)]


# -- the stacked model and optimizer -----------------------------------------------------------


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_stacked_gpt_gives_each_members_logits(positions):
    cfg = compose(SMALL + ["model.width=64", f"model.positions={positions}",
                           "model.output_mult=2.0", "model.input_mult=1.5"]).model
    models = _members(GPTShape(cfg, vocab_size=16), 3)  # three different inits
    stacked = StackedGPT.from_members(models)
    idx = torch.randint(0, 16, (4, 32))
    logits = stacked(idx)
    assert logits.shape == (3, 4, 32, 16)
    for k, model in enumerate(models):
        torch.testing.assert_close(logits[k], model(idx), rtol=1e-5, atol=1e-6)


def test_a_member_goes_in_and_out_of_the_stack_unchanged():
    models = _members(_shape(), 2)
    stacked = StackedGPT.from_members(models)
    out = GPT(_shape())
    stacked.store_member(1, out)
    for (name, a), b in zip(models[1].named_parameters(), out.parameters(), strict=True):
        assert torch.equal(a, b), name


COMPILED = pytest.param(True, marks=pytest.mark.slow, id="compiled")
"""A compiled group (the default on CUDA) compiles clipping and AdamW: on CPU, checked against
PyTorch's eager ones like the eager path (tens of seconds of compiling)."""


@pytest.mark.parametrize("compiled", [pytest.param(False, id="eager"), COMPILED])
def test_clip_grad_norms_is_torch_clipping_per_member(compiled):
    clip = torch.compile(clip_grad_norms_) if compiled else clip_grad_norms_
    models = _members(_shape(), 3)
    stacked = StackedGPT.from_members(models)
    for p in stacked.parameters():
        p.grad = torch.randn_like(p) * torch.tensor([0.01, 1.0, 10.0]).view(-1, *[1] * (p.ndim - 1))
    grads = {name: p.grad.clone() for name, p in stacked.named_parameters()}
    norms = clip(list(stacked.parameters()), 1.0)
    for k, model in enumerate(models):
        for name, p in model.named_parameters():
            p.grad = grads[name][k].clone()
        expected = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        torch.testing.assert_close(norms[k], expected, rtol=1e-6, atol=0)
        for name, p in stacked.named_parameters():
            torch.testing.assert_close(p.grad[k], dict(model.named_parameters())[name].grad,
                                       rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("hidden_wd, compiled",
                         [(wd, False) for wd in HiddenWeightDecay]
                         + [pytest.param(wd, *COMPILED.values, marks=COMPILED.marks,
                                         id=f"{wd.value}-compiled")
                            for wd in HiddenWeightDecay][:1])
def test_stacked_adamw_is_torch_adamw_per_member(hidden_wd, compiled):
    # Width 64 at base 32: m = 2, so the hidden group's η/m and λ·m (or λ) are exercised.
    shape = _shape(64)
    models = _members(shape, 3)
    cfg = OptimConfig(hidden_weight_decay=hidden_wd, beta2=0.95)
    lrs, wds = [1e-3, 1e-2, 3e-2], [0.0, 0.1, 0.5]
    references = [copy.deepcopy(m) for m in models]
    # A lone run's AdamW (trainer.loop): PyTorch's fused kernel.
    torch_opts = [torch.optim.AdamW(param_groups(m, weight_decay=wd, hidden_wd=hidden_wd),
                                    betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)
                  for m, wd in zip(references, wds, strict=True)]
    stacked = StackedGPT.from_members(models)
    opt = StackedAdamW(stacked, models[0], cfg, weight_decays=wds, compiled=compiled)
    gen = torch.Generator().manual_seed(1)
    rows = [0, 1, 2]  # the member in each row of the stack
    for step in range(6):
        if step == 3:  # member 1 leaves the stack after three steps; the others go on
            stacked.keep_members([0, 2])
            opt.keep_members([0, 2])
            rows = [0, 2]
        scale = 1.0 - 0.1 * step  # the schedule's LR changes every step
        for name, p in stacked.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen)
            for row, k in enumerate(rows):
                dict(references[k].named_parameters())[name].grad = p.grad[row].clone()
        opt.step([lrs[k] * scale for k in rows])
        for k in rows:
            set_lr(torch_opts[k], lrs[k] * scale)
            torch_opts[k].step()
    assert stacked.num_members == 2 and opt.steps == [6, 6]
    for row, k in enumerate(rows):
        for name, p in references[k].named_parameters():
            got = dict(stacked.named_parameters())[name][row]
            if not compiled:  # the same kernel on the member's rows: bit for bit
                assert torch.equal(got, p), (k, name)
            rel = ((got - p).abs().max() / p.abs().max()).item()
            assert rel < 1e-6, (k, name, rel)


def test_stacked_adamw_state_round_trips_through_torch_adamw():
    shape = _shape()
    models = _members(shape, 2)
    stacked = StackedGPT.from_members(models)
    opt = StackedAdamW(stacked, models[0], OptimConfig(), weight_decays=[0.1, 0.0])
    for p in stacked.parameters():
        p.grad = torch.randn_like(p)
    opt.step([1e-2, 1e-3])
    member = GPT(shape)
    torch_opt = torch.optim.AdamW(param_groups(member, weight_decay=0.0,
                                               hidden_wd=HiddenWeightDecay.width_invariant))
    opt.store_member(1, member, torch_opt)
    other = StackedAdamW(stacked, models[0], OptimConfig(), weight_decays=[0.1, 0.0])
    other.load_member(0, member, torch_opt)
    assert other.steps == [1, 0]
    for name in opt.exp_avg:
        assert torch.equal(other.exp_avg[name][0], opt.exp_avg[name][1])
        assert torch.equal(other.exp_avg_sq[name][0], opt.exp_avg_sq[name][1])


# -- which trials may fuse ---------------------------------------------------------------------


def test_fusion_problems_name_the_key_that_may_not_differ(tmp_path):
    base = _cfg(tmp_path)
    members = [_cfg(tmp_path, *m) for m in MEMBERS]
    assert fusion_problems(members) == []
    assert len({group_key(c) for c in members}) == 1
    for key in ("seed=1", "model.param=sp", "train.batch_size=16", "optim.beta2=0.99"):
        other = _cfg(tmp_path, key)
        (problem,) = fusion_problems([base, other])
        assert problem.startswith(f"members differ in {key.split('=')[0]} ")
        assert group_key(other) != group_key(base)
    assert "twice" in fusion_problems([base, base])[0]
    assert "world_size" in fusion_problems([_cfg(tmp_path, "train.world_size=2")])[0]


# -- a group against its members' independent runs ---------------------------------------------


def test_members_train_as_their_independent_runs(tmp_path):
    fused = run_group([_cfg(tmp_path / "fused", *m) for m in MEMBERS])
    step_rel, eval_rel = [], []
    for overrides, member in zip(MEMBERS, fused, strict=True):
        alone = run(_cfg(tmp_path / "alone", *overrides))
        assert member.status == alone.status == "finished"
        assert member.run_id == alone.run_id and member.run_dir.name == alone.run_dir.name
        got, ref = _history(member.run_dir), _history(alone.run_dir)
        assert [s for s, _ in got] == [s for s, _ in ref] == list(range(1, 33))
        step_rel += [abs(a - b) / b for (_, a), (_, b) in zip(got[:10], ref[:10], strict=True)]
        eval_rel.append(abs(member.final_eval_loss - alone.final_eval_loss)
                        / alone.final_eval_loss)
        # Same files, same keys, same counters: fusion is an execution detail.
        assert set(member.summary) == set(alone.summary)
        for key in ("final/tokens", "final/steps", "derived.n_params", "derived.weight_decay"):
            assert member.summary[key] == alone.summary[key], key
        on_disk = json.loads((member.run_dir / "summary.json").read_text())
        assert on_disk["final/eval_loss"] == member.final_eval_loss
        assert json.loads((member.run_dir / "config.json").read_text()) == \
            json.loads((alone.run_dir / "config.json").read_text()) | {
                "storage_root": str(tmp_path / "fused")}
    print(f"max relative difference: first 10 losses {max(step_rel):.2e}, "
          f"final eval {max(eval_rel):.2e}")
    assert max(step_rel) < 1e-5
    assert max(eval_rel) < 1e-3


def test_micro_batches_accumulate_as_in_an_independent_run(tmp_path):
    shared = ["train.micro_batch_size=2", "train.tokens=8192"]  # four chunks a step
    fused = run_group([_cfg(tmp_path / "fused", *m, *shared) for m in MEMBERS[:2]])
    for overrides, member in zip(MEMBERS, fused, strict=False):
        alone = run(_cfg(tmp_path / "alone", *overrides, *shared))
        for (_, a), (_, b) in zip(_history(member.run_dir), _history(alone.run_dir),
                                  strict=True):
            assert a == pytest.approx(b, rel=1e-5)
        assert member.final_eval_loss == pytest.approx(alone.final_eval_loss, rel=1e-3)


def test_a_diverged_member_leaves_the_stack_and_the_others_go_on_unchanged(tmp_path):
    # Evals after the divergence read the weights of the right rows of the shrunk stack.
    evals = ["train.eval_every_tokens=4096"]
    good = [["optim.lr=0.003", *evals], ["optim.lr=0.01", *evals]]
    bad = ["optim.lr=30", "schedule.warmup_tokens=0", *evals]
    with_bad = run_group([_cfg(tmp_path / "a", *good[0]), _cfg(tmp_path / "a", *bad),
                          _cfg(tmp_path / "a", *good[1])])
    without = run_group([_cfg(tmp_path / "b", *m) for m in good])
    diverged = with_bad[1]
    assert diverged.status == "diverged" and diverged.final_eval_loss is None
    steps = diverged.summary["final/steps"]
    assert steps < 8 and diverged.summary["final/diverged_at_tokens"] == steps * 8 * 64
    assert max(step for step, _ in _history(diverged.run_dir)) == steps
    for member, reference in zip([with_bad[0], with_bad[2]], without, strict=True):
        assert member.status == "finished"
        assert _history(member.run_dir) == _history(reference.run_dir)
        assert len(_history(member.run_dir, "eval/loss")) == 4  # steps 8, 16, 24 and the end
        assert _history(member.run_dir, "eval/loss") == _history(reference.run_dir, "eval/loss")
        assert member.final_eval_loss == reference.final_eval_loss
    (alone,) = run_group([_cfg(tmp_path / "c", *bad)])  # a group that ends with no one left
    assert alone.summary["final/diverged_at_tokens"] == diverged.summary["final/diverged_at_tokens"]


def test_runs_built_without_a_process_group_take_the_configured_device(tmp_path):
    # A fused group's members and a shared family's trunk are built without a process group;
    # they once took its default device, the CPU, whatever `train.device` said, so on a GPU
    # machine they trained on the CPU. PyTorch's meta device stands in for CUDA here.
    cfgs = [_cfg(tmp_path, "train.device=meta", lr) for lr in ("optim.lr=0.01", "optim.lr=0.003")]
    lone = TrainingRun(cfgs[0], reporter=NullReporter())
    trunk = TrunkRun(cfgs[0], trunk_id="t", directory=tmp_path / "trunk", branch_points=[1024],
                     reporter=NullReporter())
    group = FusedRun.for_trials(cfgs, reporters=[NullReporter(), NullReporter()])
    for device, params in ((lone.device, lone.model.parameters()),
                           (trunk.device, trunk.model.parameters()),
                           (group.lead.device, group.model.parameters())):
        assert device.type == "meta" and {p.device.type for p in params} == {"meta"}


def test_losses_read_every_few_steps_give_the_group_that_reads_every_step(tmp_path,
                                                                          monkeypatch):
    """On CUDA a group leaves its losses on the device and reads them every few steps
    (`settle_every`), as a lone run does. Forced on CPU: every member's metrics, summary and
    checkpoints are those of the group that reads each step, a member that diverges inside a
    batch of unread steps included (it ends at the step it diverged, with that step's tokens)."""
    import trainer.fused as fused

    cadence = ["train.log_every_steps=5", "train.eval_every_tokens=4096",
               "train.checkpoint_every_tokens=3072"]
    members = [["optim.lr=0.003"], ["optim.lr=30", "schedule.warmup_tokens=0"],
               ["optim.lr=0.01"]]

    def trained(root: Path, every: int):
        monkeypatch.setattr(fused, "settle_every", lambda device: every)
        out = []
        for r in run_group([_cfg(root, *m, *cadence) for m in members]):
            rows = [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
                    for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
            saved = r.run_dir / "checkpoints"
            out.append((r.status, {k: v for k, v in r.summary.items() if "wall_s" not in k},
                        rows, sorted(p.name for p in saved.iterdir()) if saved.exists() else []))
        return out

    each, batched = trained(tmp_path / "each", 1), trained(tmp_path / "batched", 16)
    assert batched == each
    assert [status for status, *_ in each] == ["finished", "diverged", "finished"]
    diverged = each[1][1]
    assert diverged["final/steps"] < 16
    assert diverged["final/diverged_at_tokens"] == diverged["final/steps"] * 8 * 64


class _Killed(Exception):
    pass


class _DiesAt(JsonlReporter):
    """A reporter whose process "dies" when it is handed the metrics of `step`."""

    def __init__(self, path: Path, step: int):
        super().__init__(path, echo=False)
        self.step = step

    def log_metrics(self, metrics, *, step):
        if step == self.step:
            raise _Killed
        super().log_metrics(metrics, step=step)


@pytest.mark.parametrize("one_save_lost", [False, True, "damaged", "all_damaged"])
def test_a_killed_group_resumes_and_ends_as_an_uninterrupted_one(tmp_path, one_save_lost):
    # one_save_lost: killed while its members wrote the checkpoint of step 16, one member's
    # never landed; the group resumes from step 8, the newest that all of them have.
    # "damaged": that member's step 16 is there but cut short (a full disk): it is set aside
    # and that member trains from step 8 apart (the group raised the loader's error, and a
    # sweep retried it to the end as a failed trial); "all_damaged": all its checkpoints are
    # cut short, and it trains from its start.
    cadence = ["train.checkpoint_every_tokens=4096", "train.eval_every_tokens=8192"]
    reference = run_group([_cfg(tmp_path / "ref", *m, *cadence) for m in MEMBERS[:3]])
    cfgs = [_cfg(tmp_path / "kill", *m, *cadence) for m in MEMBERS[:3]]
    reporters = [_DiesAt(tmp_path / "kill" / r.run_dir.name / "metrics.jsonl", step=21)
                 for r in reference]
    with pytest.raises(_Killed):  # after the checkpoint of step 16, before that of step 24
        run_group(cfgs, reporters)
    assert not any((tmp_path / "kill" / r.run_dir.name / "summary.json").exists()
                   for r in reference)
    saves = tmp_path / "kill" / reference[1].run_dir.name / "checkpoints"
    if one_save_lost is True:
        shutil.rmtree(saves / "step-000000016")
    if one_save_lost in ("damaged", "all_damaged"):
        for step in ([16] if one_save_lost == "damaged" else saved_steps(saves)):
            for f in (saves / f"step-{step:09d}").iterdir():
                os.truncate(f, 100)
    else:
        quiet = [JsonlReporter(Path(tmp_path / "unused" / f"{k}.jsonl"), echo=False)
                 for k in range(3)]
        assert FusedRun.for_trials(cfgs, reporters=quiet).restore() == (
            8 if one_save_lost else 16)
    resumed = run_group(cfgs)
    if one_save_lost in ("damaged", "all_damaged"):
        assert (saves / ".step-000000016.damaged").is_dir()
    for got, ref in zip(resumed, reference, strict=True):
        assert _history(got.run_dir) == _history(ref.run_dir)  # exact, nothing twice
        assert _history(got.run_dir, "eval/loss") == _history(ref.run_dir, "eval/loss")
        assert got.final_eval_loss == ref.final_eval_loss


def test_members_already_done_are_not_trained_again(tmp_path):
    done = run(_cfg(tmp_path, *MEMBERS[0]))
    mtime = (done.run_dir / "metrics.jsonl").stat().st_mtime_ns
    results = run_group([_cfg(tmp_path, *m) for m in MEMBERS[:2]])
    assert results[0].summary == done.summary
    assert (done.run_dir / "metrics.jsonl").stat().st_mtime_ns == mtime
    alone = run(_cfg(tmp_path / "alone", *MEMBERS[1]))
    assert results[1].status == "finished"
    assert results[1].final_eval_loss == pytest.approx(alone.final_eval_loss, rel=1e-3)


def test_each_member_has_its_own_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = [f"tracking.uri={uri}", "tracking.experiment=fused"]
    results = run_group([_cfg(tmp_path, *m, *tracking) for m in MEMBERS[:2]])
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fused")
    runs = {r.data.tags["trial.id"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {r.run_id for r in results}
    for result, overrides in zip(results, MEMBERS, strict=False):
        found = runs[result.run_id]
        assert found.data.tags["trial.status"] == "finished"
        assert float(found.data.params["optim.lr"]) == float(overrides[0].split("=")[1])
        assert found.data.metrics["final/eval_loss"] == pytest.approx(result.final_eval_loss)
        history = client.get_metric_history(found.info.run_id, "train/loss")
        assert [m.step for m in history] == list(range(1, 33))


def test_member_losses_are_each_members_mean_cross_entropy():
    logits = torch.randn(3, 2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    got = member_losses(logits, targets)
    for k in range(3):
        torch.testing.assert_close(got[k], F.cross_entropy(logits[k].flatten(0, 1),
                                                           targets.flatten()))


def test_the_fused_adamw_kernel_rounds_alike_at_any_thread_count():
    """A lone run (fused AdamW) and a group (the kernel per member) must round alike, and a run
    alike at any thread count (the torchrun and spawned launches differ in threads)."""
    def update(threads: int) -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            gen = torch.Generator().manual_seed(0)
            p = torch.nn.Parameter(torch.randn(100_003, generator=gen))  # no multiple of a vector
            opt = torch.optim.AdamW([p], lr=3e-2, weight_decay=0.1, fused=True)
            for _ in range(3):
                p.grad = torch.randn(p.shape, generator=gen)
                opt.step()
            return p.detach().clone()
        finally:
            torch.set_num_threads(before)

    assert torch.equal(update(1), update(2))


TRUNK_LRS = [["optim.lr=0.003"], ["optim.lr=30", "schedule.warmup_tokens=0"], ["optim.lr=0.01"]]
"""A family's trunk per LR of an LR × token-budget sweep; the second diverges."""
POINTS = [6553, 13107]  # the branch points of budgets 8,192 and 16,384 (decay fraction 0.2)


def _trunk_cfgs(root: Path, lrs=TRUNK_LRS):
    return [_cfg(root, *lr, "schedule.decay_fraction=0.2", "train.eval_every_tokens=4096")
            for lr in lrs]


def _trunks(root: Path, n: int) -> dict:
    return {"trunk_ids": [f"t{k}" for k in range(n)],
            "directories": [root / "trunks" / f"t{k}" for k in range(n)]}


def test_fused_trunks_train_as_each_trunk_alone(tmp_path):
    # An LR × budget sweep's trunks (one per LR) trained as one group: each trunk saves the
    # same checkpoints and writes the index and history it does alone; the one that diverges
    # stops where it stops alone, and the others go on; a budget branches from a fused trunk.
    cfgs = _trunk_cfgs(tmp_path / "fused")
    fused = train_trunk_group(cfgs, **_trunks(tmp_path / "fused", 3), branch_points=POINTS)
    step_rel, eval_rel = [], []
    for k, (cfg, index) in enumerate(zip(_trunk_cfgs(tmp_path / "alone"), fused, strict=True)):
        directory = tmp_path / "alone" / "trunks" / f"t{k}"
        alone = train_trunk(cfg, trunk_id=f"t{k}", directory=directory, branch_points=POINTS)
        for key in ("status", "tokens", "steps", "points", "checkpoints", "cadence_tokens"):
            assert index.get(key) == alone.get(key), (k, key)
        assert (index.get("diverged") or {}).get("step") == (alone.get("diverged") or {}).get(
            "step")
        got = _history(tmp_path / "fused" / "trunks" / f"t{k}")
        ref = _history(directory)
        assert [s for s, _ in got] == [s for s, _ in ref]
        step_rel += [abs(a - b) / b for (_, a), (_, b) in zip(got[:10], ref[:10], strict=True)]
        got, ref = (_history(d, "eval/loss") for d in (tmp_path / "fused" / "trunks" / f"t{k}",
                                                       directory))
        assert [s for s, _ in got] == [s for s, _ in ref]
        eval_rel += [abs(a - b) / b for (_, a), (_, b) in zip(got, ref, strict=True)]
    print(f"fused trunks against alone, max relative difference: first 10 losses "
          f"{max(step_rel):.2e}, evals {max(eval_rel):.2e}")
    assert [i["status"] for i in fused] == ["stopped", "diverged", "stopped"]
    assert fused[0]["tokens"] == 13107 // 512 * 512 and len(fused[0]["checkpoints"]) > 2
    assert max(step_rel) < 1e-5 and max(eval_rel) < 1e-3
    # The budget of 8,192 at LR 0.01 branches from its fused trunk's checkpoint.
    budget = _cfg(tmp_path / "fused", *TRUNK_LRS[2], "schedule.decay_fraction=0.2",
                  "train.eval_every_tokens=4096", "train.tokens=8192")
    branching.write_branch(RunPaths.for_config(budget, config_id(budget)).run_dir,
                           trunk_dir=tmp_path / "fused" / "trunks" / "t2", branch_tokens=6553)
    branched = run(budget)
    alone = run(_cfg(tmp_path / "alone", *TRUNK_LRS[2], "schedule.decay_fraction=0.2",
                     "train.eval_every_tokens=4096", "train.tokens=8192"))
    assert branched.summary["final/tokens_shared"] == 6553 // 512 * 512
    assert branched.final_eval_loss == pytest.approx(alone.final_eval_loss, rel=1e-3)


@pytest.mark.parametrize("damaged", [False, True])
def test_a_killed_trunk_group_resumes_and_ends_as_an_uninterrupted_one(tmp_path, damaged):
    # damaged: trunk 0's newest checkpoint is cut short (a full disk); it is set aside and
    # that trunk trains from the one before, apart from the others.
    reference = train_trunk_group(_trunk_cfgs(tmp_path / "ref"), **_trunks(tmp_path / "ref", 3),
                                  branch_points=POINTS)
    cfgs = _trunk_cfgs(tmp_path / "kill")
    dying = [_DiesAt(tmp_path / "unused" / f"{k}.jsonl", step=20) for k in range(3)]
    with pytest.raises(_Killed):  # after the cadence checkpoint of step 18 (9,216 tokens)
        train_trunk_group(cfgs, **_trunks(tmp_path / "kill", 3), branch_points=POINTS,
                          reporters=dying)
    saves = tmp_path / "kill" / "trunks" / "t0" / "checkpoints"
    if damaged:
        for f in (saves / "step-000000018").iterdir():
            os.truncate(f, 100)
    resumed = train_trunk_group(cfgs, **_trunks(tmp_path / "kill", 3), branch_points=POINTS)
    assert (saves / ".step-000000018.damaged").is_dir() == damaged
    for k, (got, ref) in enumerate(zip(resumed, reference, strict=True)):
        for key in ("status", "tokens", "steps", "points", "checkpoints"):
            assert got.get(key) == ref.get(key), (k, key)
        untimed = [{k: v for k, v in (i.get("diverged") or {}).items() if k != "wall_s"}
                   for i in (got, ref)]
        assert untimed[0] == untimed[1]
        assert _history(tmp_path / "kill" / "trunks" / f"t{k}") == \
            _history(tmp_path / "ref" / "trunks" / f"t{k}")  # exact, no step twice


def test_trunks_at_different_steps_train_apart_and_none_trains_a_step_twice(tmp_path):
    # A worker killed between two trunks' saves: one trunk stands a checkpoint ahead. The
    # group trains each from where it stands, and both end as the uninterrupted group.
    reference = train_trunk_group(_trunk_cfgs(tmp_path / "ref", TRUNK_LRS[::2]),
                                  **_trunks(tmp_path / "ref", 2), branch_points=POINTS)
    cfgs = _trunk_cfgs(tmp_path / "kill", TRUNK_LRS[::2])
    trunks = _trunks(tmp_path / "kill", 2)
    dying = [_DiesAt(tmp_path / "unused" / f"{k}.jsonl", step=20) for k in range(2)]
    with pytest.raises(_Killed):
        train_trunk_group(cfgs, **trunks, branch_points=POINTS, reporters=dying)
    shutil.rmtree(trunks["directories"][1] / "checkpoints" / "step-000000018")
    saved = {p: p.stat().st_mtime_ns for p in (tmp_path / "kill").glob("trunks/*/checkpoints/*")}
    resumed = train_trunk_group(cfgs, **trunks, branch_points=POINTS)
    for k, (got, ref) in enumerate(zip(resumed, reference, strict=True)):
        assert got["checkpoints"] == ref["checkpoints"] and got["tokens"] == ref["tokens"]
        assert _history(trunks["directories"][k]) == _history(tmp_path / "ref" / "trunks"
                                                              / f"t{k}")
    assert {p: p.stat().st_mtime_ns for p in saved} == saved  # none saved again


def test_configs_that_cannot_fuse_are_refused_as_a_trunk_group(tmp_path):
    cfgs = [_cfg(tmp_path, "optim.lr=0.01"), _cfg(tmp_path, "optim.lr=0.01", "seed=1")]
    with pytest.raises(ConfigError, match="members differ in seed"):
        train_trunk_group(cfgs, **_trunks(tmp_path, 2), branch_points=POINTS)


def test_branches_of_fused_trunks_train_as_one_group_as_each_does_alone(tmp_path):
    # The trunks of three LRs trained as one group; their budgets of 8,192 tokens branch at
    # one trunk step and train their decays as one group: each ends as it does alone from the
    # same trunk, and the one whose trunk diverged before its point ends diverged, untrained.
    trunks = _trunks(tmp_path / "fused", 3)
    train_trunk_group(_trunk_cfgs(tmp_path / "fused"), **trunks, branch_points=POINTS)

    def budgets(root: Path):
        cfgs = [_cfg(root, *lr, "schedule.decay_fraction=0.2", "train.eval_every_tokens=4096",
                     "train.tokens=8192") for lr in TRUNK_LRS]
        for cfg, directory in zip(cfgs, trunks["directories"], strict=True):
            branching.write_branch(RunPaths.for_config(cfg, config_id(cfg)).run_dir,
                                   trunk_dir=directory, branch_tokens=POINTS[0])
        return cfgs

    grouped = run_group(budgets(tmp_path / "fused"))
    alone = [run(cfg) for cfg in budgets(tmp_path / "alone")]
    assert [r.status for r in grouped] == [r.status for r in alone] == \
        ["finished", "diverged", "finished"]
    for got, ref in zip(grouped, alone, strict=True):
        for key in ("final/tokens", "final/steps", "final/tokens_shared",
                    "final/diverged_at_tokens"):
            assert got.summary.get(key) == ref.summary.get(key), key
        assert [s for s, _ in _history(got.run_dir)] == [s for s, _ in _history(ref.run_dir)]
        for (_, a), (_, b) in zip(_history(got.run_dir), _history(ref.run_dir), strict=True):
            assert a == pytest.approx(b, rel=1e-5)
    assert grouped[0].summary["final/tokens_shared"] == 6553 // 512 * 512
    for got, ref in ((grouped[0], alone[0]), (grouped[2], alone[2])):
        assert got.final_eval_loss == pytest.approx(ref.final_eval_loss, rel=1e-3)
    # One loop: the two that trained logged the group's tokens/s at each of their own steps.
    speeds = [{s: v for s, v in _history(r.run_dir, "perf/tokens_per_s") if s > 12}
              for r in (grouped[0], grouped[2])]
    assert speeds[0] and speeds[0] == speeds[1]


def test_a_pruned_member_saves_ends_pruned_and_the_others_go_on_unchanged(tmp_path):
    # An adaptive search's pruners, one per member: the one that prunes its member at the
    # second eval point ends it there (saved, `pruned`), as alone; the others end as in the
    # group without it.
    evals = ["train.eval_every_tokens=4096"]
    members = [["optim.lr=0.003", *evals], ["optim.lr=0.03", *evals], ["optim.lr=0.01", *evals]]
    asked = []

    def prune_at_second(index: int, eval_loss: float) -> bool:
        asked.append((index, eval_loss))
        return index == 2

    pruned = run_group([_cfg(tmp_path / "a", *m) for m in members],
                       pruners=[None, prune_at_second, None])
    without = run_group([_cfg(tmp_path / "b", *m) for m in members[::2]])
    alone = run(_cfg(tmp_path / "c", *members[1]), pruner=prune_at_second)
    assert pruned[1].status == alone.status == "pruned"
    assert pruned[1].summary["final/tokens"] == alone.summary["final/tokens"] == 8192
    assert saved_steps(pruned[1].run_dir / "checkpoints")[-1] == 16
    assert [i for i, _ in asked] == [1, 2, 1, 2]  # the group's member, then alone
    assert asked[1][1] == pytest.approx(asked[3][1], rel=1e-3)
    for got, ref in zip((pruned[0], pruned[2]), without, strict=True):
        assert got.status == "finished"
        assert _history(got.run_dir) == _history(ref.run_dir)
        assert got.final_eval_loss == ref.final_eval_loss


@pytest.mark.parametrize("fused", [False, True])
def test_a_branch_whose_trunk_checkpoint_is_damaged_trains_alone_from_its_start(tmp_path,
                                                                                fused):
    """The trunk's checkpoint at a branch point cut short: the branch (alone, or in a fused
    group) raised DCP's CheckpointException, a BaseException, as a traceback."""
    trunks = _trunks(tmp_path / "t", 3)
    index = train_trunk_group(_trunk_cfgs(tmp_path / "t"), **trunks, branch_points=POINTS)
    damaged = trunks["directories"][0] / "checkpoints" / index[0]["points"][str(POINTS[0])]
    for f in damaged.iterdir():
        os.truncate(f, 100)
    budget = ["schedule.decay_fraction=0.2", "train.eval_every_tokens=4096", "train.tokens=8192"]
    cfgs = [_cfg(tmp_path / "t", *TRUNK_LRS[k], *budget) for k in (0, 2)]
    for cfg, k in zip(cfgs, (0, 2), strict=True):
        branching.write_branch(RunPaths.for_config(cfg, config_id(cfg)).run_dir,
                               trunk_dir=trunks["directories"][k], branch_tokens=POINTS[0])
    results = run_group(cfgs) if fused else [run(cfgs[0])]
    alone = run(_cfg(tmp_path / "alone", *TRUNK_LRS[0], *budget))
    assert results[0].status == "finished"
    assert results[0].summary["final/tokens_shared"] == 0  # from its start, alone
    assert results[0].final_eval_loss == pytest.approx(alone.final_eval_loss, rel=1e-4)
    assert not (results[0].run_dir / branching.BRANCH_FILE).exists()
    if fused:  # the other member still branches from its own trunk
        assert results[1].summary["final/tokens_shared"] == POINTS[0] // 512 * 512
