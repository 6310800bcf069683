"""Fused trial groups: K trials that differ only in per-member scalars, trained as one model.

`run_group(cfgs)` trains the trials `cfgs` together: one process, one data stream, one batch
per step, through a `StackedGPT` (every parameter with a leading member dimension) and a
`StackedAdamW`. Fusion is an execution detail: every member is still an ordinary trial, with
the trial id it has alone, its own run directory, `metrics.jsonl`, `config.json`, checkpoints
and `summary.json`, written with the keys an independent `trainer.run` writes.

What members may differ in (`trainer.fusable`); everything else must be equal:
- `optim.lr`, `optim.weight_decay`: the optimizer's per-member scalars.
- `optim.timescale`: it only sets a member's λ (`trainer.mup.resolved_weight_decay`).
- `schedule.*`: each member's LR is its own schedule at the shared token count.
- `run_dir`, `checkpoint_dir`: each member's own directories.
Not `seed`: it fixes the order of the data stream as well as the init, so members of different
seeds would not share a batch. Not `model.param`: muP and SP are different networks away from
the base width, and the stack holds one set of forward multipliers. A group must also run in
one process (`train.world_size=1`) and at a constant batch (`train.batch_schedule=constant`,
since the norm test grows each member's batch differently); `fusion_problems` says so, one
sentence per problem. `train.compile` applies to the stack as it does to a lone model (on
CUDA by default): the loss with the model, and here also the per-member clipping and the
AdamW update; a member that diverges changes the stack's shape, and so compiles each of them
once more.

How a group runs: members already done (`finished`, `diverged`) are left out. Each remaining
member is a `TrainingRun`, which keeps its counters, reporter, paths and summary, and holds
its weights and AdamW state in its own `GPT` and optimizer whenever a checkpoint, an eval or
the end needs them there; so a member's checkpoint is the one it would write alone, and its
eval runs the independent code on the same weights. Between those points the weights live in
the stack. A member whose loss diverges is finished `diverged` at its token count and masked
out: its row leaves the stack, so it takes no further update and costs nothing more, and
the others' updates never depended on it. A member's `perf/tokens_per_s`, `perf/mfu` and
`final/wall_s` count its own tokens over the group's time: they say how fast that trial went,
not what the device did (K times as much).

Resume: `run_group` trains together the members that start at one step (their members save
together; a worker killed between two members' saves leaves one a step ahead: it trains apart,
so that no step is trained twice); `FusedRun` itself continues from the newest checkpoint
step that every member has, or from the start when there is none. Training is exact on CPU,
so either way each member ends as an uninterrupted run would.

Prefix sharing: the trunks of several families (an LR × token-budget sweep's, one per LR)
train as one group of `trainer.trunk.TrunkRun` members (`trainer.trunk.train_trunk_group`):
the stack does not care which; each trunk saves, indexes and ends as it does alone.

Branches: members that are branches of trunks (`trainer.branching`) and have no checkpoint
of their own start from their trunks' checkpoints, as alone; `run_group` groups its members by
where they start (`trainer.branching.start_position`: their own checkpoints, their trunks'
checkpoints of one step, step 0) and trains each such set as a group. A sweep's budgets of one
size whose trunks trained as one group start at one trunk step, and fuse.

Adaptive search: each member may have a pruner (`run_group(..., pruners=)`), asked at the
shared eval points; a member it prunes saves its checkpoint, ends `pruned` and leaves the
stack like a diverged one.

Not yet, and how it would fit:
- Speed: evals run member by member, through `TrainingRun.evaluate`. On CUDA the losses are
  read every `settle_every` steps (a member diverging inside such a batch is rewound to the
  step it diverged and leaves the stack there; its `final/wall_s` counts the batch, as a lone
  run's does). On an H200 an eager group of 8 width-128 members steps in ~1.5× a lone step,
  1.3 ms of kernels in 11 ms of launching (benchmarks/README.md): a launch-free step (CUDA
  graphs) is what would make a group several times faster than processes sharing the GPU.
  `PROXYSWEEP_COMPILE_MODE=reduce-overhead` (`trainer.loop.compile_mode`) compiles the
  group's loss, clipping and update in that mode, the forward and backward replayed as CUDA
  graphs; experimental until benchmarks/gpu_check.sh has measured it.
- Memory: each member's own `GPT` and AdamW state sit on the group's device beside the stack
  (they receive the member's weights for checkpoints and evals), about twice the stack's
  weights and moments; for proxies that is small.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer import branching, checkpoint, stopping
from trainer.config import Config
from trainer.data import load_tokens
from trainer.errors import ConfigError
from trainer.fusable import fusion_problems
from trainer.fused_model import StackedGPT
from trainer.fused_optim import StackedAdamW, clip_grad_norms_
from trainer.identity import config_id
from trainer.loop import (
    Pruner,
    RunResult,
    StepResult,
    TrainingRun,
    _crossed,
    compile_step,
    compiles,
    default_reporter,
    mark_step_begin,
    settle_every,
)
from trainer.mup import resolved_weight_decay
from trainer.paths import RunPaths, read_summary, saved_steps
from trainer.reporting import Reporter
from trainer.schedules import learning_rate
from trainer.schema import DONE, PRUNED
from trainer.validation import check


def run_group(cfgs: Sequence[Config], reporters: Sequence[Reporter] | None = None,
              pruners: Sequence[Pruner | None] | None = None) -> list[RunResult]:
    """Train the trials `cfgs` as one fused group; each one's result, in the order of `cfgs`.

    Members that already ended (`finished` or `diverged`) are returned as stored and not
    trained; the others resume together from their checkpoints (see the module docstring).

    Args:
        cfgs: the members' resolved configs (see `fusion_problems` for what may differ).
        reporters: one per member; JSONL (and MLflow when `tracking.uri` is set) when omitted.
        pruners: one per member (None: never pruned), an adaptive search's (`Pruner`).

    Raises:
        ConfigError: a config cannot run, or the configs cannot run as one group.
    """
    for cfg in cfgs:
        check(cfg)
    problems = fusion_problems(cfgs)
    if problems:
        raise ConfigError(problems)
    results: list[RunResult | None] = []
    remaining: list[int] = []
    for i, cfg in enumerate(cfgs):
        run_id = config_id(cfg)
        paths = RunPaths.for_config(cfg, run_id)
        stored = read_summary(paths)
        if stored is not None and stored.get("status") in DONE:
            results.append(RunResult(run_id, stored["status"], paths.run_dir, stored))
        else:
            results.append(None)
            remaining.append(i)
    # Members train together when they start at one position (`branching.start_position`):
    # from their own checkpoints of one step, from their trunks' checkpoints of one step
    # (branches), or from step 0. A member a killed group left a save ahead of the others
    # thus trains apart rather than its last steps again; each set is a group, in turn.
    while remaining:
        together: dict[object, list[int]] = {}
        for i in remaining:
            paths = RunPaths.for_config(cfgs[i], config_id(cfgs[i]))
            together.setdefault(branching.start_position(paths.run_dir, paths.checkpoints),
                                []).append(i)
        members = next(iter(together.values()))
        try:
            trained = FusedRun.for_trials(
                [cfgs[i] for i in members],
                reporters=[reporters[i] if reporters else None for i in members],
                pruners=[pruners[i] if pruners else None for i in members]).train()
        except checkpoint.SetAside:  # (a member now starts from its checkpoint before)
            continue
        for i, result in zip(members, trained, strict=True):
            results[i] = result
        remaining = [i for i in remaining if i not in members]
    return results


@dataclass(frozen=True)
class PendingGroupStep:
    """A group's step whose losses and gradient norms may still be on the device (see
    `trainer.loop.settle_every`), with the counters as that step left every member's."""

    rows: tuple[int, ...]
    """The member in each row of the stack at this step."""
    losses: torch.Tensor
    grad_norms: torch.Tensor
    lrs: list[float]
    batch_size: int
    step: int
    tokens: int
    position: int


def member_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each member's logits (K, B, T, V) against shared targets (B, T)."""
    num_members = logits.shape[0]
    per_token = F.cross_entropy(logits.flatten(0, 2).float(),
                                targets.flatten().repeat(num_members), reduction="none")
    return per_token.view(num_members, -1).mean(1)  # (K,)


class FusedRun:
    """A fused group in progress: the stacked model and optimizer, and one `TrainingRun` per
    member for everything that is the member's own. `restore()` and `step()` are public for
    tests.

    The members are `TrainingRun`s (`for_trials`: trials) or subclasses that say where they
    stop, save and end (`trainer.trunk.TrunkRun`: a sweep's trunks fused): the group follows
    its first training member's `_fits_budget`, `_ends_here` and `_checkpoint_due` (equal for
    every member of a group), starts each member with its `begin` and ends it with its
    `_finish`, whose answers `train()` returns.

    Args:
        members: the members' runs, none of them done, built on one set of tokens
            (`data=`), of configs that may fuse (`trainer.fusable`).
    """

    def __init__(self, members: Sequence[TrainingRun]):
        self.members = list(members)
        cfgs = [m.cfg for m in self.members]
        self.model = StackedGPT.from_members([m.model for m in self.members])

        def losses(chunk: torch.Tensor) -> torch.Tensor:
            return member_losses(self.model(chunk[:, :-1]), chunk[:, 1:])

        # Compiled with the model, as `TrainingRun` compiles its loss; the clipping and the
        # optimizer too, so that a group's step launches a few dozen kernels, not hundreds.
        compiled = compiles(cfgs[0], self.members[0].device)
        self.losses = compile_step(losses) if compiled else losses
        self.clip = compile_step(clip_grad_norms_) if compiled else clip_grad_norms_
        self.optimizer = StackedAdamW(self.model, self.members[0].model, cfgs[0].optim,
                                      weight_decays=[resolved_weight_decay(c) for c in cfgs],
                                      compiled=compiled)
        self.rows = list(range(len(cfgs)))
        """The member in each row of the stack: those still training (a diverged member's
        row is dropped)."""
        self.results: list = [None] * len(cfgs)
        """Each member's `_finish` answer, once it has ended."""

    @classmethod
    def for_trials(cls, cfgs: Sequence[Config], *,
                   reporters: Sequence[Reporter | None] | None = None,
                   pruners: Sequence[Pruner | None] | None = None) -> FusedRun:
        """The group of the trials `cfgs`, none of them done (`run_group` leaves those out),
        with one reporter per member (None: the member's default, JSONL and MLflow) and one
        pruner per member (an adaptive search's: a pruned member saves, ends `pruned` and
        leaves the stack, as a diverged one does)."""
        data = load_tokens(cfgs[0].data)
        reporters = reporters or [None] * len(cfgs)
        pruners = pruners or [None] * len(cfgs)
        return cls([TrainingRun(cfg, data=data, pruner=pruner, reporter=reporter
                                or default_reporter(cfg, RunPaths.for_config(cfg, config_id(cfg))))
                    for cfg, reporter, pruner in zip(cfgs, reporters, pruners, strict=True)])

    @property
    def lead(self) -> TrainingRun:
        """The first member still training: the group follows its stream position, batch
        size and cadences (every training member's are equal)."""
        return self.members[self.rows[0]]

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self) -> int | None:
        """Load every member's checkpoint of the newest step they all have; that step, or
        None (then every member starts from its init). Members none of which has a
        checkpoint of its own that are branches of trunks (`trainer.branching`) start from
        their trunks' checkpoints, which `run_group` has them share the step of."""
        own = [saved_steps(m.paths.checkpoints) for m in self.members]
        if not any(own):  # `TrainingRun.restore` finds a branch's trunk checkpoint
            try:
                restored = [m.restore() for m in self.members]
            except checkpoint.NoCheckpointReadable as err:  # (a trunk's, at a branch point)
                print(f"note: {err.problems[0].partition(': run it again')[0]}; training it "
                      "from its start", file=sys.stderr)
                raise checkpoint.SetAside from None
            # (a branch whose trunk diverged before its point takes over the divergence and
            # loads nothing: `train` ends it before the first step)
            started = {m.state.step for m in self.members
                       if m.branch is None or m.branch.diverged is None}
            if len(started) > 1:
                raise ConfigError([f"the members start at different steps {sorted(started)}: "
                                   "only trials that start at one step train as one group"])
            for k, m in enumerate(self.members):
                self.model.load_member(k, m.model)
                self.optimizer.load_member(k, m.model, m.optimizer)
            return None if all(step is None for step in restored) else min(started, default=0)
        common = set.intersection(*map(set, own))
        step = max(common) if common else None
        if step is not None:
            for k, m in enumerate(self.members):  # before any divergence: row k is member k
                try:
                    m.restore(step=step)
                # (DCP's CheckpointException derives from BaseException, not Exception)
                except (Exception, checkpoint.CheckpointException) as err:
                    if not checkpoint.damaged(err):
                        raise
                    checkpoint.set_aside(checkpoint.path_of(m.paths.checkpoints, step),
                                         checkpoint.damage_said(err))
                    raise checkpoint.SetAside from None
                self.model.load_member(k, m.model)
                self.optimizer.load_member(k, m.model, m.optimizer)
        return step

    def _to_member(self, k: int) -> TrainingRun:
        """Member k with its current weights and AdamW state in its own model and optimizer."""
        m, row = self.members[k], self.rows.index(k)
        self.model.store_member(row, m.model)
        self.optimizer.store_member(row, m.model, m.optimizer)
        return m

    def save(self) -> None:
        """Each member still training writes its own checkpoint of the current step."""
        for k in self.rows:
            self._to_member(k).save()

    # -- one step ------------------------------------------------------------------------

    def take_step(self) -> PendingGroupStep:
        """One optimizer step of every member still training, on one shared batch; the
        members' losses and gradient norms left on the device."""
        lead, t = self.lead, self.lead.cfg.train
        training = [self.members[k] for k in self.rows]
        batch_size = lead.step_batch_size
        batch = lead.local_batch()
        lrs = [learning_rate(m.cfg.schedule, m.schedule_inputs,
                             m.state.tokens + batch_size * t.seq_len / 2) for m in training]
        mark_step_begin()
        loss_sum = torch.zeros(len(training), device=lead.device)
        for chunk in batch.split(lead.micro_batch_size):
            with lead._autocast():
                losses = self.losses(chunk)
            # Each member's loss reaches only its own rows: their sum is every member's
            # backward at once.
            (losses * (len(chunk) / len(batch))).sum().backward()
            loss_sum += losses.detach() * len(chunk)
        clip = lead.cfg.optim.grad_clip or math.inf
        # A copy: under CUDA-graph replay (`reduce-overhead`) the next step's replay writes
        # over the graph's outputs, and this step's norms wait to be read (`settle_every`).
        grad_norms = self.clip(list(self.model.parameters()), clip).clone()
        self.optimizer.step(lrs)
        self.model.zero_grad(set_to_none=True)
        for m in training:
            m.state.step += 1
            m.state.position += batch_size
            m.state.tokens += batch_size * t.seq_len
        return PendingGroupStep(tuple(self.rows), loss_sum / batch_size, grad_norms, lrs,
                                batch_size, lead.state.step, lead.state.tokens,
                                lead.state.position)

    @staticmethod
    def settle(pending: list[PendingGroupStep]) -> list[dict[int, StepResult]]:
        """The results of steps taken (member index → its result, a dict a step), read from
        the device in one transfer. The steps have the same rows (`_train_until_done` settles
        before a row leaves the stack)."""
        values = torch.stack([torch.stack((p.losses.float(), p.grad_norms.float()))
                              for p in pending]).tolist()  # (steps, 2, K)
        return [{k: StepResult(loss, norm, p.lrs[row], p.batch_size)
                 for row, (k, loss, norm) in enumerate(zip(p.rows, losses, norms, strict=True))}
                for p, (losses, norms) in zip(pending, values, strict=True)]

    def step(self) -> dict[int, StepResult]:
        """One step of every member still training, read at once; member index → its
        result."""
        (results,) = self.settle([self.take_step()])
        return results

    # -- the loop ------------------------------------------------------------------------

    def train(self) -> list:
        """Train every member to the budget or to its divergence; each one's result (its
        `_finish` answer: a `RunResult` for a trial)."""
        resumed = self.restore()
        for k, m in enumerate(self.members):
            m.begin(resumed)
            if m.branch is not None and m.take_over_trunk():  # its stable phase diverged
                self.results[k] = m._finish("diverged")
                self._leave_stack(k)
        if self.rows:
            self._train_until_done()
        for k in self.rows:
            self.results[k] = self._to_member(k)._finish("finished")
        return self.results

    def _train_until_done(self) -> None:
        # (a stop asked for ends the group after its step, every member saved there:
        # `trainer.stopping`)
        with stopping.between_steps(enabled=True):  # (one process: `fusion_problems`)
            self._train_steps()

    def _train_steps(self) -> None:
        t = self.lead.cfg.train
        window_start, window_tokens = time.perf_counter(), 0
        pending: list[PendingGroupStep] = []
        every = settle_every(self.lead.device)
        while self.rows and self.lead._fits_budget():
            lead = self.lead  # training before these steps, maybe not after them (divergence)
            started = time.perf_counter()
            pending.append(self.take_step())
            batch_tokens = pending[-1].batch_size * t.seq_len
            window_tokens += batch_tokens
            last = lead._ends_here()
            log = lead.state.step % t.log_every_steps == 0 or last
            evaluated = _crossed(lead.state.tokens, batch_tokens, t.eval_every_tokens) \
                and not last
            save = lead._checkpoint_due(batch_tokens, last=last)
            stop = stopping.requested() and not last
            if not (log or evaluated or save or stop or len(pending) >= every):
                self._add_wall_s(time.perf_counter() - started)
                continue
            settled = self.settle(pending)  # waits for the device to finish those steps
            self._add_wall_s(time.perf_counter() - started)
            for p, results in zip(pending, settled, strict=True):
                for k, result in results.items():
                    if k not in self.rows:  # diverged at an earlier step of this batch
                        continue
                    m = self.members[k]
                    m.state.last_loss = result.loss
                    if m.diverged(result.loss, result.grad_norm):
                        # The member ends at this step; its row's later steps are dropped.
                        m.state.step, m.state.tokens, m.state.position = (
                            p.step, p.tokens, p.position)
                        self._diverge(k, result)
            pending, results = [], settled[-1]
            pause = time.perf_counter()  # eval and checkpoints do not count against tokens/s
            tokens_per_s = window_tokens / (pause - window_start)
            pruned = [k for k in self.rows
                      if self._report(k, results[k], tokens_per_s=tokens_per_s, last=last,
                                      evaluated=evaluated)]
            for k in pruned:  # as a lone run: saved (asked again unpruned, it continues)
                m = self._to_member(k)
                m.save()
                self.results[k] = m._finish(PRUNED)
                self._leave_stack(k)
            if log:
                window_start, window_tokens = time.perf_counter(), 0
            stop = stopping.requested() and not last  # (one asked for while it reported)
            if self.rows and (save or stop):
                self.save()
            if stop and self.rows:
                stopping.stop_now()
            window_start += time.perf_counter() - pause

    def _add_wall_s(self, seconds: float) -> None:
        """Training seconds of a step, counted for every member still training."""
        for k in self.rows:
            self.members[k].state.wall_s += seconds

    def _diverge(self, k: int, result: StepResult) -> None:
        """Member k diverged at this step: record it as `TrainingRun` does, and drop its row
        from the stack (the others' rows, and so their updates, do not change)."""
        m = self.members[k]
        m.reporter.log_metrics({"train/loss": result.loss, "train/lr": result.lr,
                                "train/tokens": m.state.tokens}, step=m.state.step)
        self.results[k] = m._finish("diverged")
        self._leave_stack(k)

    def _leave_stack(self, k: int) -> None:
        """Drop member k's row: the others' rows, and so their updates, do not change."""
        keep = [row for row, member in enumerate(self.rows) if member != k]
        if keep:
            self.model.keep_members(keep)
            self.optimizer.keep_members(keep)
        self.rows = [self.rows[row] for row in keep]

    def _report(self, k: int, result: StepResult, *, tokens_per_s: float, last: bool,
                evaluated: bool) -> bool:
        """Member k's metrics of this step, at its logging and eval cadences; whether its
        pruner (an adaptive search's, `trainer.loop.Pruner`) ends it at this eval point."""
        m = self.members[k]
        metrics = {}
        if m.state.step % m.cfg.train.log_every_steps == 0 or last:
            metrics = m._step_metrics(result, tokens_per_s)
        if evaluated:
            self.model.store_member(self.rows.index(k), m.model)
            metrics["eval/loss"] = m.evaluate()
        if metrics:
            m.reporter.log_metrics(metrics, step=m.state.step)
        return evaluated and m.pruner is not None and m._pruned(metrics["eval/loss"])
