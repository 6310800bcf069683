"""One training run, from config to summary, resumable at any checkpoint.

`run(cfg, reporter)` validates, finds the run directory from the config id, returns at once if
the run already ended, else restores the newest checkpoint (model, optimizer, stream position,
counters, RNG) and trains to the token budget or to divergence. On CPU a run killed and
restarted ends with exactly the losses of an uninterrupted one: the data stream is a pure
function of (seed, position) and nothing else draws random numbers.

`run` is the entry point for sweeps and `python -m trainer`. `TrainingRun` is the same run
taken a piece at a time (build it, `restore`, `step`, `evaluate`, `save`, `train`), for tests
and tools that need to look between steps. The optimizer's rules, weight decay from a
timescale included, are in `trainer.mup`; FLOP counts and the device peak in `trainer.flops`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainer import branching, checkpoint, stopping
from trainer.config import BatchSchedule, Config, DataSource
from trainer.data import TokenData, TokenStream, eval_batches, load_tokens
from trainer.distributed import Dist, all_sum, barrier, process_group, resolve_device
from trainer.errors import ConfigError
from trainer.flops import cpu_peak_at_least, flops_per_token, peak_flops
from trainer.identity import config_id, flatten, past_ids
from trainer.model import GPT, GPTShape, count_params
from trainer.mup import build_optimizer, resolved_weight_decay, set_lr
from trainer.norm_test import MicroBatchNoise, grown_batch
from trainer.parallelize import shard_model
from trainer.paths import RunPaths, adopt_run_dir, list_checkpoints, read_summary
from trainer.reporting import (
    JsonlReporter,
    MlflowReporter,
    MultiReporter,
    NullReporter,
    Reporter,
    redact,
)
from trainer.schedules import ScheduleInputs, learning_rate
from trainer.schema import DONE, PRUNED
from trainer.validation import check


@dataclass
class TrainState:
    """Counters that a checkpoint carries besides model and optimizer."""

    step: int = 0
    tokens: int = 0
    position: int = 0
    """Sequences of the stream consumed."""
    initial_loss: float | None = None
    wall_s: float = 0.0
    last_loss: float = float("nan")
    batch_size: int = 0
    """Global batch of the next step (grows under `train.batch_schedule=norm_test`)."""
    tokens_shared: int = 0
    """Tokens of a trunk this run started from (`trainer.branching`); 0 for one from step 0."""
    wall_s_shared: float = 0.0
    """The trunk's seconds within `wall_s`."""


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports."""

    loss: float
    """Mean over every sequence of the batch, on every rank."""
    grad_norm: float
    lr: float
    batch_size: int
    """Sequences in this step's batch."""
    norm_test: float | None = None
    """T = Var/(B·‖g‖²) when this step ran the norm test."""


@dataclass(frozen=True)
class PendingStep:
    """A step taken whose loss and gradient norm may still be on the device (see
    `settle_every`), with the counters as that step left them."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float
    batch_size: int
    norm_test: float | None
    step: int
    tokens: int
    position: int


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and its `final/*` and `derived.*` values."""

    run_id: str
    status: str
    run_dir: Path
    summary: dict = field(default_factory=dict)

    @property
    def final_eval_loss(self) -> float | None:
        return self.summary.get("final/eval_loss")


def next_token_loss(model: torch.nn.Module, chunk: torch.Tensor,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `model`'s predictions for `chunk[:, 1:]` from `chunk[:, :-1]`, the
    logits taken in fp32."""
    logits = model(chunk[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(),
                           reduction=reduction)


def compiles(cfg: Config, device: torch.device) -> bool:
    """Does this run compile its loss (the model with the cross-entropy)? `train.compile`, or
    on CUDA when unset."""
    return device.type == "cuda" if cfg.train.compile is None else cfg.train.compile


COMPILE_MODE_ENV = "PROXYSWEEP_COMPILE_MODE"
"""An environment variable: `torch.compile`'s mode for what a run compiles (unset: PyTorch's
default mode). Experimental, for measuring on a GPU (benchmarks/fused.py --gpu, in
benchmarks/gpu_check.sh): `reduce-overhead` replays the compiled forward and backward as CUDA
graphs, so that a step of tiny kernels is not bound by launching them. Like `train.compile`,
it is not part of a run's id."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode() -> str | None:
    """`PROXYSWEEP_COMPILE_MODE`, checked; None when unset."""
    mode = os.environ.get(COMPILE_MODE_ENV) or None
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError([f"{COMPILE_MODE_ENV}={mode} is not a torch.compile mode: give one "
                           f"of {', '.join(COMPILE_MODES)}, or unset it"])
    return mode


def compile_step(fn: Callable) -> Callable:
    """`fn` compiled in the mode `compile_mode()` says."""
    return torch.compile(fn, mode=compile_mode())


def mark_step_begin() -> None:
    """Tell CUDA-graph replay (`reduce-overhead`) that a new training step begins, so that it
    may reuse the memory of the last step's graph outputs (each step reads its own at once)."""
    if compile_mode() == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


def settle_every(device: torch.device) -> int:
    """Steps whose loss may stay on the device before the loop reads it. Reading a loss waits
    for the device to finish the step; on CUDA that would stall the queue of kernels every
    step, so losses are read in batches (and always before a log line, an eval, a checkpoint
    and the end). On CPU every operation is synchronous already: read each step."""
    return SETTLE_EVERY_CUDA if device.type == "cuda" else 1


SETTLE_EVERY_CUDA = 16


def derived_values(cfg: Config, model: GPT, vocab_size: int) -> dict[str, float]:
    """The `derived.*` params of the MLflow schema."""
    n_params, n_total = count_params(model)
    batch_tokens = cfg.train.batch_size * cfg.train.seq_len
    return {
        "derived.n_params": n_params,
        "derived.n_params_total": n_total,
        "derived.flops_per_token": flops_per_token(cfg.model, vocab_size=vocab_size,
                                                   seq_len=cfg.train.seq_len),
        "derived.batch_tokens": batch_tokens,
        "derived.total_steps": cfg.train.tokens // batch_tokens,
        "derived.weight_decay": resolved_weight_decay(cfg),
        "derived.vocab_size": vocab_size,
    }


def default_reporter(cfg: Config, paths: RunPaths) -> Reporter:
    """JSONL + stdout, plus MLflow when `tracking.uri` is set."""
    jsonl = JsonlReporter(paths.metrics)
    if cfg.tracking.uri:
        return MultiReporter(jsonl, MlflowReporter(cfg.tracking.uri, cfg.tracking.experiment,
                                                   history=paths.metrics))
    return jsonl


Pruner = Callable[[int, float], bool]
"""Asked at every eval point with (eval point, eval loss): True ends the run there, `pruned`.
The eval point counts `train.eval_every_tokens` intervals, so runs of one budget at different
batch sizes are compared at the same tokens."""


def run(cfg: Config, reporter: Reporter | None = None, *, pruner: Pruner | None = None
        ) -> RunResult:
    """Train one run to its token budget or to divergence and return its summary.

    Resumes from the newest checkpoint in the run's checkpoint directory; returns the stored
    result without training when the run has already finished or diverged. A `pruner` (an
    adaptive search's) may end it early at an eval point; a pruned run keeps a checkpoint
    there, so asking for it again without a pruner continues it.

    Raises:
        ConfigError: the config cannot run (nothing is trained).
    """
    check(cfg)
    compile_mode()  # a mode misspelt in the environment, before anything runs
    run_id = config_id(cfg)
    paths = RunPaths.for_config(cfg, run_id)
    if not cfg.run_dir:  # its folder under an id an earlier rule gave it (a sweep's launch
        for old in past_ids(cfg):  # does this for its trials, `orchestrator.legacy`)
            if adopt_run_dir(RunPaths.for_config(cfg, old).run_dir, paths.run_dir,
                             new_id=run_id):
                break
    problem = another_runs_files(cfg, paths, run_id)
    if problem:
        raise ConfigError([problem])
    stored = read_summary(paths)
    if stored is not None and stored.get("status") in DONE:
        return RunResult(run_id, stored["status"], paths.run_dir, stored)
    with process_group(cfg, paths.run_dir) as d:
        if not d.is_main:
            reporter = NullReporter()
        reporter = reporter or default_reporter(cfg, paths)
        training = TrainingRun(cfg, reporter=reporter, dist=d, pruner=pruner)
        try:
            return training.train()
        except checkpoint.NoCheckpointReadable as err:
            if d.world_size > 1:
                raise
            # (nothing was reported yet: the restore comes first; a new run builds a model
            # and optimizer that no damaged checkpoint has touched)
            print(f"note: {err.problems[0].partition(': run it again')[0]}; training it from "
                  "its start", file=sys.stderr)
            return TrainingRun(cfg, reporter=reporter, dist=d, pruner=pruner).train()


def another_runs_files(cfg: Config, paths: RunPaths, run_id: str) -> str | None:
    """Why the folders `run_dir` or `checkpoint_dir` (when the config names them) cannot be
    this run's: they hold another config's summary, params or checkpoints, which this run
    would otherwise report as its own or resume from. None when they are free or its own.
    (Without them a run's folder is named by its id, so it holds only its own files.)"""
    def found_id(path: Path, key: str) -> str | None:
        try:
            return json.loads(path.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    own = {run_id, *past_ids(cfg)}  # (its id under an earlier rule: its own files)
    if cfg.run_dir:
        for name in ("summary.json", "config.json"):
            other = found_id(paths.run_dir / name, "trial.id")
            if other is not None and other not in own:
                return (f"run_dir={cfg.run_dir} holds run {other[:12]}, not this config's "
                        f"{run_id[:12]}: give another run_dir, or leave it unset (each run then "
                        "has its own folder, storage_root/<config id>)")
    if cfg.checkpoint_dir:
        newest = list_checkpoints(paths.checkpoints)[-1:]
        if newest:
            try:
                other = torch.load(newest[0] / checkpoint.TRAIN_STATE, map_location="cpu",
                                   weights_only=False).get("run_id")
            except Exception:  # noqa: BLE001 (unreadable: the restore says what is wrong)
                other = None
            if other is not None and other not in own:
                return (f"checkpoint_dir={cfg.checkpoint_dir} holds checkpoints of run "
                        f"{other[:12]}, not this config's {run_id[:12]}: give another "
                        "checkpoint_dir, or leave it unset (run_dir/checkpoints)")
    return None


class TrainingRun:
    """A run in progress: model, optimizer, data stream and counters on this process.

    `train()` restores the newest checkpoint and drives the run to its end, as `run` does; the
    pieces it is made of are public for tests and tools: `restore()`, `step()` (one optimizer
    step), `evaluate()`, `save()`, and `state`, `model`, `local_batch()` to look at.
    Building one trains nothing, reads no checkpoint and does not validate the config
    (`run` calls `trainer.validation.check` first).

    Args:
        cfg: the resolved config; its id names the run directory.
        reporter: receives params, metrics and the summary (`NullReporter` for none).
        dist: this process's place in the process group; one CPU/GPU process when omitted.
        pruner: may end the run at an eval point (see `Pruner`); asked on rank 0 only.
        data: the tokens of `cfg.data`, when the caller has loaded them already (a fused
            group loads them once for all its members).
    """

    def __init__(self, cfg: Config, *, reporter: Reporter, dist: Dist | None = None,
                 pruner: Pruner | None = None, data: TokenData | None = None):
        d = dist or Dist(device=resolve_device(cfg.train.device))
        self.cfg, self.reporter, self.dist, self.pruner = cfg, reporter, d, pruner
        self.run_id = config_id(cfg)
        self.paths = RunPaths.for_config(cfg, self.run_id)
        self.device = d.device
        data = data or _load_tokens_once(cfg, d)
        short = [f"its {name} split has {len(tokens):,} tokens" for name, tokens in
                 (("training", data.train), ("held-out", data.val))
                 if len(tokens) < cfg.train.seq_len + 1]
        if short:
            more = ("a larger data.num_tokens" if cfg.data.source is DataSource.synthetic
                    else "more text")  # (synthetic data has no text to give)
            raise ConfigError([f"data: {' and '.join(short)}, less than one sequence of "
                               f"train.seq_len={cfg.train.seq_len} plus one: give {more}, "
                               "or a shorter train.seq_len"])
        self.stream = TokenStream(data.train, cfg.train.seq_len, cfg.seed)
        eval_set = eval_batches(data.val, seq_len=cfg.train.seq_len,
                                num_tokens=cfg.train.eval_tokens,
                                batch_size=self.micro_batch_size)
        # Each rank evaluates every W-th chunk; ranks short of a chunk repeat one with weight 0
        # so that every rank runs the same number of (collective) forward passes.
        per_rank = -(-len(eval_set) // d.world_size)
        self.eval_set = [(eval_set[i], 1.0) if i < len(eval_set) else (eval_set[0], 0.0)
                         for i in range(d.rank, per_rank * d.world_size, d.world_size)]
        torch.manual_seed(cfg.seed)
        self.model = GPT(GPTShape(cfg.model, data.vocab_size)).to(self.device)
        self.derived = derived_values(cfg, self.model, data.vocab_size)
        if d.sharded:
            shard_model(self.model, self.device)
        def loss(chunk: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
            return next_token_loss(self.model, chunk, reduction)

        # The loss is compiled with the model: one graph from token ids to the loss, so that
        # the fp32 logits are never written out (GPT-124M on an H200: 44% MFU against 34%
        # with the model alone compiled, benchmarks/trainer_throughput.py --gpu --variants).
        self.loss = compile_step(loss) if compiles(cfg, self.device) else loss
        # The fused (one-kernel) AdamW, on CPU too (a fifth of the single-tensor loop's time
        # there, benchmarks/eager_step.py); a fused group's members take the same kernel. The
        # FSDP2-sharded model keeps the default (fused is not tested here on sharded
        # parameters).
        self.optimizer = build_optimizer(self.model, cfg.optim,
                                         weight_decay=resolved_weight_decay(cfg),
                                         fused=not d.sharded)
        if data.loss_floor is not None:
            self.derived["derived.loss_floor"] = data.loss_floor
        # Passes over the training split the budget takes: above 1 the run repeats its data,
        # which a proxy meant to stand for a larger run (that never repeats) should not.
        passes = cfg.train.tokens / max(len(data.train), 1)
        self.derived["derived.data_passes"] = round(passes, 4)
        if passes > 1 and d.is_main:
            print(f"note: train.tokens={cfg.train.tokens:,} is {passes:.3g} passes over the "
                  f"training split ({len(data.train):,} tokens): the run repeats its data; "
                  "give more data (or a smaller budget) for a run that does not", flush=True)
        evaluated = sum(int(b.numel()) - len(b) for b in eval_set)  # (targets: seq_len a row)
        self.derived["derived.eval_tokens"] = evaluated
        if evaluated < cfg.train.eval_tokens - cfg.train.seq_len + 1 and d.is_main:
            print(f"note: train.eval_tokens={cfg.train.eval_tokens:,} but the eval split holds "
                  f"{len(data.val):,} tokens: each eval reads {evaluated:,}; give more data "
                  + ("(data.val_paths)" if cfg.data.val_paths else "(or data.holdout_fraction)")
                  + " for a steadier eval loss", flush=True)
        self.state = TrainState(batch_size=cfg.train.batch_size)
        self._trimmed_batch: int | None = None
        self.schedule_inputs = ScheduleInputs(cfg.optim.lr, cfg.train.tokens,
                                              cfg.train.batch_size)
        self.branch: branching.BranchSource | None = None
        """The trunk checkpoint (or divergence) this run started from, when it did."""

    @cached_property
    def peak_flops_per_s(self) -> float | None:
        """What MFU divides by: the device's peak times the ranks, None when unknown. Asked
        for at the first logged step, not when the run is built; `peak_flops` measures once
        per machine and remembers it (see `trainer.flops`)."""
        peak = peak_flops(self.device, self.cfg.data.cache_dir)
        return peak * self.dist.world_size if peak else None

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self, *, step: int | None = None) -> int | None:
        """Load the newest checkpoint (or the one taken at `step`); the step it was taken at,
        or None.

        A run without a checkpoint of its own that is a branch of a trunk
        (`trainer.branching`) starts from the trunk's checkpoint instead (then `branch` says
        which), or takes over the trunk's divergence without loading anything."""
        if step is None:
            saved = checkpoint.load_latest(self.paths.checkpoints, model=self.model,
                                           optimizer=self.optimizer)
        else:
            saved = checkpoint.load(checkpoint.path_of(self.paths.checkpoints, step),
                                    model=self.model, optimizer=self.optimizer)
        if saved is None:
            source = branching.branch_source(self.paths.run_dir)
            if source is None:
                return None
            self.branch = source
            if source.diverged is not None:
                d = source.diverged
                self.state = TrainState(step=d.step, tokens=d.tokens, last_loss=d.loss,
                                        wall_s=d.wall_s, initial_loss=d.initial_loss,
                                        tokens_shared=d.tokens, wall_s_shared=d.wall_s,
                                        batch_size=d.batch_size or self.state.batch_size)
                return d.step
            try:
                saved = checkpoint.load(source.checkpoint, model=self.model,
                                        optimizer=self.optimizer)
            # (DCP's CheckpointException derives from BaseException, not Exception)
            except (Exception, checkpoint.CheckpointException) as err:
                if not checkpoint.damaged(err):
                    raise
                # The run stops branching from it (its trunk's other branches each find it
                # so), and a new run with an untouched model trains it alone from its start.
                (self.paths.run_dir / branching.BRANCH_FILE).unlink(missing_ok=True)
                raise checkpoint.NoCheckpointReadable([
                    f"trunk checkpoint {source.checkpoint} cannot be read "
                    f"({checkpoint.damage_said(err)}), and the run no longer branches from "
                    "it: run it again to train it from its start"]) from None
        self.state = TrainState(**saved["state"])
        if self.branch is not None:
            self.state.tokens_shared, self.state.wall_s_shared = (self.state.tokens,
                                                                  self.state.wall_s)
        # A grown batch is whole micro-batches on every rank of the run that saved it; at
        # another world size it is rounded up to whole ones of this run.
        unit = self.micro_batch_size * self.dist.world_size
        self.state.batch_size = -(-(self.state.batch_size or self.cfg.train.batch_size)
                                  // unit) * unit
        torch.set_rng_state(saved["rng"]["torch"])
        np.random.set_state(saved["rng"]["numpy"])
        random.setstate(saved["rng"]["python"])
        if torch.cuda.is_available() and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        return self.state.step

    def save(self) -> None:
        """Write a checkpoint at the current step (model, optimizer, counters, RNG)."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
               "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint.save(
            self.paths.checkpoints, step=self.state.step, keep=self.cfg.train.keep_checkpoints,
            model=self.model, optimizer=self.optimizer, d=self.dist,
            train_state={"state": asdict(self.state), "rng": rng, "run_id": self.run_id})

    # -- one step ------------------------------------------------------------------------

    @property
    def micro_batch_size(self) -> int:
        """Sequences per forward pass on one rank."""
        t = self.cfg.train
        return t.micro_batch_size or t.batch_size // self.dist.world_size

    def _autocast(self):
        # Sharded runs on CUDA get bf16 from FSDP's mixed-precision policy instead.
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.device.type == "cuda" and not self.dist.sharded)

    def local_batch(self) -> torch.Tensor:
        """This rank's slice of the global batch: a contiguous, disjoint run of sequences."""
        d = self.dist
        local = self.step_batch_size // d.world_size
        batch = self.stream.batch(self.state.position + d.rank * local, local)
        if self.device.type == "cuda":  # copied from pinned memory without waiting for it
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    @property
    def step_batch_size(self) -> int:
        """Sequences in the next step's batch: the run's batch, or the last step's trimmed to
        the budget (`_fits_budget`), which leaves the grown batch as it was."""
        return self._trimmed_batch or self.state.batch_size

    def _norm_test_step(self) -> bool:
        t = self.cfg.train
        return t.batch_schedule is BatchSchedule.norm_test \
            and (self.state.step + 1) % t.norm_test_every == 0

    def step(self) -> StepResult:
        """One optimizer step; the loss is averaged over every rank."""
        return self.settle([self.take_step()])[0]

    def settle(self, pending: list[PendingStep]) -> list[StepResult]:
        """The results of steps taken, read from the device in one transfer."""
        values = torch.stack([torch.stack((p.loss.float(), p.grad_norm.float()))
                              for p in pending]).tolist()
        return [StepResult(loss, grad_norm, p.lr, p.batch_size, p.norm_test)
                for p, (loss, grad_norm) in zip(pending, values, strict=True)]

    def take_step(self) -> PendingStep:
        """One optimizer step, its loss left on the device."""
        t = self.cfg.train
        batch_size = self.step_batch_size
        batch = self.local_batch()
        # β of the Power schedule is the batch the run trains at now: one the norm test grew
        # raises the stable phase's LR as Shen et al.'s η = β·a·n^b says (capped at
        # optim.lr); a last step trimmed to the budget keeps the β of the batch it was cut from.
        inputs = dataclasses.replace(self.schedule_inputs, batch_size=self.state.batch_size)
        lr = learning_rate(self.cfg.schedule, inputs,
                           self.state.tokens + batch_size * t.seq_len / 2)
        set_lr(self.optimizer, lr)
        mark_step_begin()
        loss_sum = torch.zeros((), device=self.device)
        chunks = batch.split(self.micro_batch_size)
        noise = None
        if self._norm_test_step():
            noise = MicroBatchNoise([p for p in self.model.parameters() if p.requires_grad],
                                    self.dist)
        for i, chunk in enumerate(chunks):
            if self.dist.sharded:  # reduce gradients once, after the last micro-batch
                # (after every one on a norm-test step: the test needs each one's gradient)
                self.model.set_requires_gradient_sync(noise is not None or i == len(chunks) - 1)
            with self._autocast():
                loss = self.loss(chunk)
            # Weighted by the local batch; FSDP's reduction averages over ranks.
            weight = len(chunk) / len(batch)
            (loss * weight).backward()
            loss_sum += loss.detach() * len(chunk)
            if noise is not None:
                noise.after_backward(weight)
        statistic = noise.statistic() if noise is not None else None
        grad_norm = self._clip_gradients(self.cfg.optim.grad_clip or math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.position += batch_size
        self.state.tokens += batch_size * t.seq_len
        if statistic is not None:  # (never below the batch it had: a trimmed last step)
            self.state.batch_size = max(self.state.batch_size, grown_batch(
                statistic, batch_size, eta=t.norm_test_eta,
                unit=self.micro_batch_size * self.dist.world_size, cap=t.max_batch_size))
        loss = all_sum(loss_sum, self.dist) / batch_size
        return PendingStep(loss, grad_norm, lr, batch_size, statistic, self.state.step,
                           self.state.tokens, self.state.position)

    def _clip_gradients(self, max_norm: float) -> torch.Tensor:
        """Clip the gradient to global norm `max_norm`, as `clip_grad_norm_` does; the norm
        before clipping. On CPU, where reading the norm costs no wait, the pass over every
        gradient is skipped when its coefficient would be 1 (multiplying by 1 changes no bit):
        most steps, once the loss has come down."""
        params = list(self.model.parameters())
        if self.device.type != "cpu" or self.dist.sharded:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            return grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not (max_norm / (grad_norm + 1e-6)).item() >= 1.0:  # a NaN norm clips too
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, grad_norm)
        return grad_norm

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed held-out tokens (every rank takes part)."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # (loss sum, tokens)
        for chunk, weight in self.eval_set:
            chunk = chunk.to(self.device)
            with self._autocast():
                loss = self.loss(chunk, "sum")
            total += weight * torch.stack([loss.double(),
                                           torch.tensor(chunk[:, 1:].numel(),
                                                        dtype=torch.float64,
                                                        device=self.device)])
        self.model.train()
        total = all_sum(total, self.dist)
        return (total[0] / total[1]).item()

    # -- the loop ------------------------------------------------------------------------

    def diverged(self, loss: float, grad_norm: float | None = None) -> bool:
        """Is `loss` non-finite or past `train.divergence_factor` × the first step's loss, or
        is the gradient exactly zero after the first step? A step too large can kill the
        network instead of blowing it up (LR 1e6: every unit saturated, the loss stuck at
        ln V with no gradient at all): it learns nothing more, and an LR sweep must not take
        it for a finished point."""
        if not math.isfinite(loss):
            return True
        if self.state.initial_loss is None:
            self.state.initial_loss = loss
            return False
        return loss > self.cfg.train.divergence_factor * self.state.initial_loss or (
            grad_norm is not None and grad_norm == 0.0)

    def train(self) -> RunResult:
        """Train to the budget or to divergence; report and store the summary."""
        self.begin(self.restore())
        if self.branch is not None and self.take_over_trunk():
            return self._finish("diverged")  # its stable phase diverged in the trunk
        status = self._train_until_done()
        return self._finish(status)

    def take_over_trunk(self) -> bool:
        """A branch's start: report its trunk's history up to the branch checkpoint as its
        own; whether it inherits the trunk's divergence (then it ends there, untrained)."""
        for row in branching.trunk_history(self.branch.trunk_dir, self.branch.step):
            self.reporter.log_metrics({k: v for k, v in row.items() if k != "step"},
                                      step=row["step"])
        return self.branch.diverged is not None

    def begin(self, resumed: int | None) -> None:
        """Tell the reporter that the run starts, or resumes at checkpoint step `resumed`, and
        write its params to `config.json` in the run directory."""
        params = {**flatten(self.cfg), **self.derived, "trial.id": self.run_id}
        params["tracking.uri"] = redact(params["tracking.uri"] or "") or None
        # A branch's history is the trunk's up to its branch checkpoint, then its own: it
        # starts as a new run and is handed the trunk's rows as if it had logged them.
        self.reporter.start(run_id=self.run_id, params=params,
                            resumed_step=None if self.branch else resumed)
        if self.dist.is_main:
            self.paths.run_dir.mkdir(parents=True, exist_ok=True)
            (self.paths.run_dir / "config.json").write_text(json.dumps(params, indent=1,
                                                                       default=str))

    def _fits_budget(self) -> bool:
        """Does the next batch fit in what is left of the token budget? A batch the norm test
        grew past what is left is trimmed to it, in whole micro-batches of every rank: the run
        then ends at its budget, schedule and decay included (it ended short, its LR never
        decayed, and it read `finished`)."""
        t = self.cfg.train
        left = t.tokens - self.state.tokens
        self._trimmed_batch = None
        if self.state.batch_size * t.seq_len <= left:
            return True
        if t.batch_schedule is BatchSchedule.norm_test:
            unit = self.micro_batch_size * self.dist.world_size
            trimmed = left // t.seq_len // unit * unit
            if trimmed >= unit:
                # For that step only: the grown batch (logged, checkpointed, reported as
                # final/batch_tokens) stays the one the norm test set.
                self._trimmed_batch = trimmed
                return True
        return False

    def _ends_here(self) -> bool:
        """Was the step just taken the run's last (no final eval or checkpoint before it)?"""
        return not self._fits_budget()

    def _checkpoint_due(self, batch_tokens: int, *, last: bool) -> bool:
        """Save after the step just taken (of `batch_tokens`)? At the checkpoint cadence."""
        return _crossed(self.state.tokens, batch_tokens,
                        self.cfg.train.checkpoint_every_tokens) and not last

    def _train_until_done(self) -> str:
        # (a stop asked for ends the run after its step, saved there: `trainer.stopping`)
        with stopping.between_steps(enabled=True):
            return self._train_steps()

    def _train_steps(self) -> str:
        t = self.cfg.train
        window_start, window_tokens = time.perf_counter(), 0
        pending: list[PendingStep] = []
        every = settle_every(self.device)
        while self._fits_budget():
            started = time.perf_counter()
            pending.append(self.take_step())
            batch_tokens = pending[-1].batch_size * t.seq_len
            window_tokens += batch_tokens
            last = self._ends_here()
            log = self.state.step % t.log_every_steps == 0 or last
            evaluated = _crossed(self.state.tokens, batch_tokens, t.eval_every_tokens) \
                and not last
            save = self._checkpoint_due(batch_tokens, last=last)
            # (one process settles at once when asked; several at their next settled step)
            stop = self.dist.world_size == 1 and stopping.requested() and not last
            if not (log or evaluated or save or stop or pending[-1].norm_test is not None
                    or len(pending) >= every):
                self.state.wall_s += time.perf_counter() - started
                continue
            settled = self.settle(pending)  # waits for the device to finish those steps
            self.state.wall_s += time.perf_counter() - started
            for p, result in zip(pending, settled, strict=True):
                self.state.last_loss = result.loss
                if self.diverged(result.loss, result.grad_norm):
                    # The steps taken after it are dropped: the run ends at this one, with
                    # the batch it trained at (a norm test after it may have grown the batch;
                    # a norm-test step settles at once, so it is never before another).
                    self.state.step, self.state.tokens, self.state.position = (
                        p.step, p.tokens, p.position)
                    self.state.batch_size = p.batch_size
                    self.reporter.log_metrics({"train/loss": result.loss, "train/lr": result.lr,
                                               "train/tokens": self.state.tokens},
                                              step=self.state.step)
                    return "diverged"
            pending, result = [], settled[-1]
            metrics = {}
            if log:
                elapsed = time.perf_counter() - window_start
                metrics = self._step_metrics(result, window_tokens / elapsed)
                window_start, window_tokens = time.perf_counter(), 0
            if result.norm_test is not None:
                metrics.update({"train/norm_test": result.norm_test,
                                "train/batch_tokens": batch_tokens})
            pause = time.perf_counter()  # eval and checkpoints do not count against tokens/s
            if evaluated:
                metrics["eval/loss"] = self.evaluate()
            if metrics:
                self.reporter.log_metrics(metrics, step=self.state.step)
            if evaluated and self._pruned(metrics["eval/loss"]):
                self.save()  # so that a run asked for again without a pruner continues
                return PRUNED
            stop = self._stop_asked() and not last  # (also one asked while it reported)
            if save or stop:
                self.save()
            if stop:
                stopping.stop_now()
            window_start += time.perf_counter() - pause
        return "finished"

    def _stop_asked(self) -> bool:
        """Has a signal asked the run to stop after this step (`trainer.stopping`)? Ranks
        agree by a sum, here where every rank settles the same steps: a sweep's cancel
        reaches rank 0 only (its task's process), a terminal's Ctrl-C every rank, each at its
        own moment; all stop at the first settled step that any of them was asked by."""
        if self.dist.world_size == 1:
            return stopping.requested()
        asked = torch.tensor(float(stopping.requested()), device=self.device)
        return all_sum(asked, self.dist).item() > 0

    def _pruned(self, eval_loss: float) -> bool:
        """Does the pruner end the run at this eval point? Rank 0 asks it; every rank takes
        part in the sum that tells them all (the other ranks have no pruner)."""
        wants = self.pruner is not None and self.dist.is_main and self.pruner(
            self.state.tokens // self.cfg.train.eval_every_tokens, eval_loss)
        return all_sum(torch.tensor(float(wants), device=self.device), self.dist).item() > 0

    def _step_metrics(self, result: StepResult, tokens_per_s: float) -> dict[str, float]:
        flops_per_s = tokens_per_s * self.derived["derived.flops_per_token"]
        metrics = {"train/loss": result.loss, "train/lr": result.lr,
                   "train/grad_norm": result.grad_norm, "train/tokens": self.state.tokens,
                   "train/batch_tokens": result.batch_size * self.cfg.train.seq_len,
                   "perf/tokens_per_s": tokens_per_s}
        if self.peak_flops_per_s:
            if flops_per_s > self.peak_flops_per_s and self.device.type == "cpu":
                per_rank = flops_per_s / self.dist.world_size
                self.peak_flops_per_s = cpu_peak_at_least(self.cfg.data.cache_dir,
                                                          per_rank) * self.dist.world_size
            metrics["perf/mfu"] = flops_per_s / self.peak_flops_per_s
        return metrics

    def _finish(self, status: str) -> RunResult:
        summary = {
            "trial.id": self.run_id, "status": status,
            "final/eval_loss": self.evaluate() if status == "finished" else None,
            "final/train_loss": self.state.last_loss,
            "final/tokens": self.state.tokens, "final/steps": self.state.step,
            "final/flops": self.state.tokens * self.derived["derived.flops_per_token"],
            "final/wall_s": self.state.wall_s,
            "final/tokens_trained": self.state.tokens - self.state.tokens_shared,
            "final/tokens_shared": self.state.tokens_shared,
            "final/wall_s_shared": self.state.wall_s_shared,
            **self.derived,
        }
        if status == "diverged":
            summary["final/diverged_at_tokens"] = self.state.tokens
        if self.cfg.train.batch_schedule is BatchSchedule.norm_test:
            summary["final/batch_tokens"] = self.state.batch_size * self.cfg.train.seq_len
        if status == "finished" and summary["final/eval_loss"] is not None:
            self.reporter.log_metrics({"eval/loss": summary["final/eval_loss"]},
                                      step=self.state.step)
        if self.dist.is_main:
            _atomic_write_json(self.paths.summary, summary)
        self.reporter.finish(status=status, summary=summary)
        return RunResult(self.run_id, status, self.paths.run_dir, summary)


def _load_tokens_once(cfg: Config, d: Dist):
    """Rank 0 fills the token cache first; the other ranks then read it."""
    if d.is_main:
        data = load_tokens(cfg.data)
    barrier(d)
    return data if d.is_main else load_tokens(cfg.data)


def _crossed(tokens: int, batch_tokens: int, every: int) -> bool:
    """Did the last batch take the token count past a multiple of `every`?"""
    return every > 0 and tokens // every > (tokens - batch_tokens) // every


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)
