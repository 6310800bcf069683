"""A family's trunk: the stable phase its token budgets share, trained once.

Under WSD and Power, trials equal but for `train.tokens` take the same steps until their decay
starts at s = (1 − f)·D (`orchestrator.families`). The trunk is that common run, trained as far
as the largest branch point, with no final decay and no final eval: a `TrainingRun` of the
family's largest budget, whose steps up to there are all in its stable phase, stopped at the
last step boundary at or below its s. On the way it saves a checkpoint

- at each branch point s_k: before the first step that would carry it past s_k, i.e. at s_k
  rounded down to a whole batch (whatever the batch, so also under the norm test);
- every `cadence_tokens` (an eighth of the first launch's largest branch point, in whole
  batches, fixed in `trunk.json` for the trunk's life): what it resumes from after a crash,
  and where a budget added later below the trunk's position branches from (training at most
  one cadence of gap before its decay).

Every checkpoint is kept (a branch may start from any of them, and `extend` may add budgets
at any point): the disk cost is (branch points + 8 × growth of the trunk) checkpoints of
model + Adam state, ~12 bytes per parameter. A trunk lives in `STORAGE_ROOT/trunks/<trunk id>/`
(`metrics.jsonl`, `checkpoints/`, `trunk.json`); its id is the family's, so a relaunch,
`resume` or `extend` continues it from its newest checkpoint, and a larger budget makes it
train on (only the increment). If it diverges, it stops and records where
(`trainer.branching`): budgets whose stable phase reaches that step diverge there too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from trainer import branching
from trainer.config import Config
from trainer.data import TokenData, load_tokens
from trainer.identity import flatten
from trainer.loop import TrainingRun, _crossed
from trainer.reporting import JsonlReporter, Reporter

KEEP_ALL = 1_000_000_000


class TrunkRun(TrainingRun):
    """The trunk as a `TrainingRun` of the family's largest budget `cfg`, in `directory`,
    stopping at the last batch boundary at or below the largest of `branch_points`."""

    def __init__(self, cfg: Config, *, trunk_id: str, directory: Path,
                 branch_points: list[int], reporter: Reporter, data: TokenData | None = None):
        index = branching.read_index(directory)
        cadence = branching.cadence_tokens(index, cfg, branch_points)
        train = dataclasses.replace(cfg.train, checkpoint_every_tokens=cadence,
                                    keep_checkpoints=KEEP_ALL)
        super().__init__(dataclasses.replace(cfg, run_dir=str(directory), checkpoint_dir=None,
                                             train=train), reporter=reporter, data=data)
        self.run_id, self.directory = trunk_id, Path(directory)
        self.points = sorted(set(int(p) for p in branch_points))
        self.index = {**index, "trunk_id": trunk_id, "cadence_tokens": cadence}

    # -- where it stops and saves ------------------------------------------------------------

    def _next_batch_tokens(self) -> int:
        return self.state.batch_size * self.cfg.train.seq_len

    def _fits_budget(self) -> bool:
        return self.state.tokens + self._next_batch_tokens() <= self.points[-1]

    def _ends_here(self) -> bool:
        return False  # a trunk step is never a run's last: no final eval, logs as usual

    def _points_here(self) -> list[int]:
        """Branch points whose checkpoint is the current boundary."""
        t, nxt = self.state.tokens, self._next_batch_tokens()
        return [s for s in self.points if t <= s < t + nxt]

    def _checkpoint_due(self, batch_tokens: int, *, last: bool) -> bool:
        return bool(self._points_here()) or _crossed(
            self.state.tokens, batch_tokens, self.cfg.train.checkpoint_every_tokens)

    def save(self) -> None:
        """Save, then enter the checkpoint in `trunk.json` (branches and the driver read it
        there)."""
        super().save()
        name = f"step-{self.state.step:09d}"
        self.index.setdefault("checkpoints", {})[name] = self.state.tokens
        for s in self._points_here():
            self.index.setdefault("points", {})[str(s)] = name
        self._write_index("running")

    def _write_index(self, status: str) -> None:
        if self.dist.is_main:
            self.index.update(status=status, tokens=self.state.tokens, steps=self.state.step,
                              wall_s=self.state.wall_s, branch_points=self.points)
            branching.write_json_atomic(self.directory / branching.TRUNK_FILE, self.index)

    # -- the run -----------------------------------------------------------------------------

    def train(self) -> dict:
        """Train (or continue) the trunk to its last branch point, or to divergence; its
        `trunk.json` index."""
        if self.index.get("diverged") is not None:
            return self.index
        self.begin(self.restore())
        return self._finish(self._train_until_done())

    def begin(self, resumed: int | None) -> None:
        """Tell the reporter that the trunk starts, or resumes at checkpoint step `resumed`;
        enter that checkpoint in the index, and save one where the trunk stands if a branch
        point is there (added by `extend`)."""
        params = {**flatten(self.cfg), "trunk.id": self.run_id}
        params.pop("train.tokens")
        self.reporter.start(run_id=self.run_id, params=params, resumed_step=resumed)
        name = f"step-{self.state.step:09d}"
        if resumed is not None:  # a checkpoint saved just before a crash may be unindexed
            self.index.setdefault("checkpoints", {})[name] = self.state.tokens
        if self._points_here() and name not in self.index.get("checkpoints", {}):
            self.save()
        else:  # (`sweep status` reads where the trunk is going from here, before any save)
            self._write_index("running")

    def _finish(self, status: str) -> dict:
        """End the trunk `finished` (at its last branch point: "stopped" in the index) or
        `diverged` (where, in the index); its index."""
        if status == "diverged":
            s = self.state
            self.index["diverged"] = dataclasses.asdict(branching.Divergence(
                step=s.step, tokens=s.tokens, loss=s.last_loss, wall_s=s.wall_s,
                initial_loss=s.initial_loss, batch_size=s.batch_size))
        self._write_index(status if status == "diverged" else "stopped")
        self.reporter.finish(status=status, summary=branching.trunk_summary(self.index))
        return self.index


def train_trunk(cfg: Config, *, trunk_id: str, directory: Path, branch_points: list[int],
                reporter: Reporter | None = None) -> dict:
    """Train the trunk of the family whose largest budget is `cfg`, so that every one of
    `branch_points` has its checkpoint; its `trunk.json` index. One process (a sweep keeps
    multi-process trials out of families)."""
    jsonl = JsonlReporter(Path(directory) / "metrics.jsonl", echo=False)
    if reporter is not None:
        from trainer.reporting import MultiReporter
        jsonl = MultiReporter(jsonl, reporter)
    return TrunkRun(cfg, trunk_id=trunk_id, directory=directory, branch_points=branch_points,
                    reporter=jsonl).train()


def train_trunk_group(cfgs: Sequence[Config], *, trunk_ids: Sequence[str],
                      directories: Sequence[Path], branch_points: list[int],
                      reporters: Sequence[Reporter | None] | None = None) -> list[dict]:
    """Train the trunks of several families as one fused group (`trainer.fused.FusedRun`): the
    families' largest budgets `cfgs`, equal but for per-member scalars (an LR sweep's trunks),
    each to the same `branch_points`; each trunk's `trunk.json` index, in order.

    Each trunk stays what it is alone: its directory, `metrics.jsonl`, checkpoints (at the
    same steps) and index; a trunk that diverges leaves the stack and the others go on. A
    group resumes from the newest step all its trunks have saved, so trunks that stand at
    different steps (a worker killed between two trunks' saves) or save at different cadences
    train as separate groups, one after the other: none trains a step twice. A trunk that had
    diverged before is answered from its index.

    Raises:
        ConfigError: the configs cannot train as one group (`trainer.fusable`).
    """
    from trainer.checkpoint import SetAside
    from trainer.errors import ConfigError
    from trainer.fusable import fusion_problems
    from trainer.fused import FusedRun
    from trainer.paths import saved_steps
    from trainer.reporting import MultiReporter

    problems = fusion_problems(cfgs)
    if problems:
        raise ConfigError(problems)
    reporters = reporters or [None] * len(cfgs)
    data = load_tokens(cfgs[0].data)

    def trunk(i: int) -> TrunkRun:
        jsonl = JsonlReporter(Path(directories[i]) / "metrics.jsonl", echo=False)
        return TrunkRun(cfgs[i], trunk_id=trunk_ids[i], directory=Path(directories[i]),
                        branch_points=branch_points, data=data,
                        reporter=jsonl if reporters[i] is None
                        else MultiReporter(jsonl, reporters[i]))

    runs = [trunk(i) for i in range(len(cfgs))]
    left = [i for i, r in enumerate(runs) if r.index.get("diverged") is None]
    while left:
        together: dict[tuple, list[int]] = {}
        for i in left:
            position = (saved_steps(runs[i].paths.checkpoints) or [None])[-1]
            together.setdefault((position, cfgs[i].train.checkpoint_every_tokens),
                                []).append(i)
        members = next(iter(together.values()))
        try:
            FusedRun([runs[i] for i in members]).train()
        except SetAside:  # a trunk's checkpoint was damaged: fresh runs, grouped again
            for i in members:
                runs[i] = trunk(i)
            continue
        left = [i for i in left if i not in members]
    return [r.index for r in runs]
