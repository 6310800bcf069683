"""Token families: which trials of a sweep share one trunk, and which run alone, and why.

Under WSD and the Power schedule the LR before the final decay is a function of the tokens
seen (and the batch size), never of the budget. So trials whose resolved configs are equal
except for `train.tokens` train the same model until their decay begins at (1 − f)·D. Such a
set is a **family**: one trunk trains the shared stable phase once, and each trial is a branch
that starts from the trunk's checkpoint at its branch point and trains only its own decay
(`trainer.trunk`, `orchestrator.sharing`).

A trial shares only when that is exact:
- the schedule is `wsd` or `power` with `schedule.decay_fraction > 0` (cosine and linear decay
  from the first step, constant has no decay to branch);
- no key makes the prefix depend on the budget: `optim.timescale` sets λ = B/(η·τ·D) from D;
- another trial of the sweep differs from it only in `train.tokens` (a default warmup below
  65,536 tokens follows the budget, so such budgets differ in `schedule.warmup_tokens` too).
Everything else (seeds, widths, LRs, the norm-test batch schedule, which is deterministic
given the prefix) only splits trials into more families.

The family's identity, and so its trunk's, is the SHA-256 of the trials' canonical config
without `train.tokens`: the same trunk is found again by `resume` and by an `extend` that adds
budgets, and continued from its last checkpoint. Pure functions; nothing here trains or reads
files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.trials import Trial
from trainer.config import Config, ScheduleName
from trainer.identity import POWER_ANCHOR_KEY, canonical_json, power_anchored

SHARED_SCHEDULES = (ScheduleName.wsd, ScheduleName.power)
TOKENS_KEY = "train.tokens"
WARMUP_KEY = "schedule.warmup_tokens"

OFF = "sharing is off (share_prefix: false or --no-share)"
TIMESCALE = ("optim.timescale sets the weight decay λ = B/(η·τ·D) from train.tokens, so the "
             "prefix depends on the budget")
ALONE = "no other trial differs from it only in train.tokens"
WARMUP = ("its default schedule.warmup_tokens follows train.tokens (budgets under 65,536 "
          "tokens); set schedule.warmup_tokens to share a trunk")


def branch_tokens(cfg: Config) -> int:
    """s = (1 − f)·D: the tokens before this trial's decay starts (the schedule's own
    `decay_start`, floored). Its branch checkpoint is the trunk's last step boundary at or
    below s, i.e. s rounded down to a whole batch under a constant batch size."""
    return math.floor(cfg.train.tokens * (1.0 - cfg.schedule.decay_fraction))


def family_id(cfg: Config, *, without: Sequence[str] = (TOKENS_KEY,),
              canonical: Callable[[Config], str] = canonical_json) -> str:
    """SHA-256 of the canonical config less `without`: equal for trials that differ only in
    those keys. With the default it names the family's trunk. (`canonical`: another rule's
    JSON, e.g. `trainer.identity.written_json` for the trunk id an earlier version gave.)"""
    flat = json.loads(canonical(cfg))
    # A trunk trains the warmup and the stable phase: it carries the warmup's Power mark, not
    # a budget's decay mark, which would split a family whose trunk trains one curve (nor,
    # without the warmup's key, the warmup's, which would split that diagnosis's key again).
    warmup = power_anchored(flat, phases=("warmup",)) if TOKENS_KEY in without \
        and WARMUP_KEY not in without else None
    for key in without:
        flat.pop(key, None)
    if TOKENS_KEY in without:
        flat.pop(POWER_ANCHOR_KEY, None)
        if warmup:
            flat[POWER_ANCHOR_KEY] = warmup
    text = "trunk|" + json.dumps(flat, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def why_not_shared(cfg: Config) -> str | None:
    """Why a trial's prefix depends on its budget (one sentence), or None when it may share."""
    sched = cfg.schedule
    if sched.name.value == "constant":
        return ("schedule=constant: it has no decay for a budget to branch into; only wsd and "
                "power have a stable phase to share")
    if sched.name not in SHARED_SCHEDULES:
        return (f"schedule={sched.name.value}: its LR depends on train.tokens from the first "
                "step; only wsd and power have a stable phase to share")
    if sched.decay_fraction <= 0:
        return ("schedule.decay_fraction=0: a branch is its decay; set decay_fraction > 0 "
                "(e.g. 0.1) to share")
    if sched.decay_fraction >= 1:
        return (f"schedule.decay_fraction={sched.decay_fraction:g}: the whole budget is its "
                "decay, so budgets share nothing; set decay_fraction < 1 (e.g. 0.1) to share")
    if cfg.optim.timescale is not None:
        return TIMESCALE
    if cfg.train.world_size > 1:
        return (f"resources.world_size={cfg.train.world_size}: a trunk trains in one process "
                "for now; use resources.world_size: 1 to share")
    return None


@dataclass(frozen=True)
class Family:
    """Trials equal but for `train.tokens`: one trunk, one branch per trial."""

    trunk_id: str
    members: tuple[Trial, ...]
    """Smallest budget first."""

    @property
    def branch_points(self) -> dict[str, int]:
        """trial id → its branch point s = (1 − f)·D in tokens."""
        return {t.trial_id: branch_tokens(t.cfg) for t in self.members}

    @property
    def batch_tokens(self) -> int:
        cfg = self.members[0].cfg
        return cfg.train.batch_size * cfg.train.seq_len

    def branch_checkpoint_tokens(self, trial: Trial) -> int:
        """Tokens at the trunk checkpoint a branch starts from: its branch point rounded down
        to a whole (initial) batch."""
        bt = self.batch_tokens
        return branch_tokens(trial.cfg) // bt * bt

    @property
    def trunk_tokens(self) -> int:
        """Tokens the trunk trains: up to the last branch point."""
        return max(self.branch_checkpoint_tokens(t) for t in self.members)

    @property
    def label(self) -> str:
        """The members' common overrides (every one but train.tokens)."""
        return " ".join(o for o in self.members[-1].overrides
                        if not o.startswith(TOKENS_KEY + "="))


@dataclass(frozen=True)
class SharingPlan:
    """A sweep's trials split into families (which share a trunk) and trials that run
    alone, each with its reason."""

    families: tuple[Family, ...]
    alone: dict[str, str]
    """trial id → why it trains from scratch."""

    def family_of(self, trial_id: str) -> Family | None:
        return next((f for f in self.families if any(t.trial_id == trial_id
                                                      for t in f.members)), None)

    def tokens(self, trials: Sequence[Trial]) -> tuple[int, int]:
        """(tokens trained, tokens if every trial trained alone) for training `trials` from
        nothing (budgets rounded down to whole batches, as the trainer does)."""
        independent = sum(_trained_budget(t) for t in trials)
        alone = sum(_trained_budget(t) for t in trials if t.trial_id in self.alone)
        shared = sum(f.trunk_tokens + sum(_trained_budget(t) - f.branch_checkpoint_tokens(t)
                                          for t in f.members) for f in self.families)
        return alone + shared, independent

    def tokens_to_run(self, trials: Sequence[Trial], to_run: Collection[str],
                      trunk_at: dict[str, int], own: Mapping[str, int] | None = None) -> int:
        """Tokens that training the trials `to_run` (ids, of `trials`) takes from here: their
        budgets, but for a family's the decays only, and its trunk from where it stands
        (`trunk_at`: trunk id → tokens trained) to the last of their branch points. Those in
        `own` (id → tokens at their latest checkpoint) go on from checkpoints of their own,
        as trials alone do (no trunk for them), and need only the rest of their budgets."""
        own = own or {}
        total = sum(_trained_budget(t) - min(own.get(t.trial_id, 0), _trained_budget(t))
                    for t in trials if t.trial_id in to_run
                    and (t.trial_id in self.alone or t.trial_id in own))
        for family in self.families:
            todo = [t for t in family.members if t.trial_id in to_run and t.trial_id not in own]
            if not todo:
                continue
            reach = max(family.branch_checkpoint_tokens(t) for t in todo)
            total += max(0, reach - trunk_at.get(family.trunk_id, 0)) + sum(
                _trained_budget(t) - family.branch_checkpoint_tokens(t) for t in todo)
        return total


def _trained_budget(trial: Trial) -> int:
    bt = trial.cfg.train.batch_size * trial.cfg.train.seq_len
    return trial.cfg.train.tokens // bt * bt


def plan_sharing(trials: Sequence[Trial], *, share: bool = True) -> SharingPlan:
    """Group `trials` into families that share a trunk; the rest run alone, with why.

    A family needs two trials or more (one trial alone gains nothing from a trunk).
    """
    if not share:
        return SharingPlan((), {t.trial_id: OFF for t in trials})
    alone: dict[str, str] = {}
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        reason = why_not_shared(trial.cfg)
        if reason is not None:
            alone[trial.trial_id] = reason
        else:
            groups.setdefault(family_id(trial.cfg), []).append(trial)
    families = []
    # Which singles would have had company (other singles, or a family's budgets of 65,536
    # tokens and more) but for a warmup that follows the budget?
    loose: dict[str, int] = {}
    for trial in (t for g in groups.values() for t in g):
        key = family_id(trial.cfg, without=(TOKENS_KEY, WARMUP_KEY))
        loose[key] = loose.get(key, 0) + 1
    for fid, members in groups.items():
        if len(members) == 1:
            (trial,) = members
            key = family_id(trial.cfg, without=(TOKENS_KEY, WARMUP_KEY))
            alone[trial.trial_id] = WARMUP if loose[key] > 1 else ALONE
            continue
        members.sort(key=lambda t: (t.cfg.train.tokens, t.trial_id))
        families.append(Family(fid, tuple(members)))
    families.sort(key=lambda f: f.label)
    return SharingPlan(tuple(families), alone)


def _short(tokens: int) -> str:
    for unit, size in (("T", 10 ** 12), ("B", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
        if tokens >= size:
            return f"{tokens / size:.4g}{unit}"
    return str(tokens)


def describe(plan: SharingPlan, trials: Sequence[Trial],
             to_run: Collection[str] | None = None,
             trunk_at: dict[str, int] | None = None, own: Mapping[str, int] | None = None
             ) -> list[str]:
    """What `--dry-run` says about sharing: each family's trunk and budgets, each trial still
    `to_run` (default: all) that runs alone and why (one line when every trial is alone for
    one reason), the tokens the whole sweep trains against training it alone, and, where
    some trials are done, the tokens the ones to run take from here (`trunk_at`: trunk id →
    tokens its trunk has trained; an extend's dry run gave the whole sweep's only; `own`: the
    trials that go on from checkpoints of their own, which need no trunk, id → tokens at
    their latest)."""
    lines = []
    for fam in plan.families:
        # (an extend's new budget beside done ones: the trunk read "418.8k tokens shared by
        # 2 budgets" where it trained 104.4k, up to the one budget to run)
        todo = [t for t in fam.members if to_run is None or t.trial_id in to_run]
        budgets = ", ".join(_short(t.cfg.train.tokens) + ("" if t in todo else " done")
                            for t in fam.members)
        reach = max((fam.branch_checkpoint_tokens(t) for t in todo), default=0)
        at = (trunk_at or {}).get(fam.trunk_id, 0)
        left = ("" if len(todo) == len(fam.members) else
                "; nothing of it to train (its budgets are done)" if not todo else
                f"; trained to {_short(at)}, it trains to {_short(reach)} for the budgets to "
                "run" if at < reach and at else
                f"; it trains {_short(reach)} for the budgets to run" if at < reach else
                "; it holds what the budgets to run need")
        lines.append(f"trunk {fam.trunk_id[:12]}  {_short(fam.trunk_tokens)} tokens shared by "
                     f"{len(fam.members)} budgets ({budgets}): {fam.label}{left}")
    reasons = {plan.alone.get(t.trial_id) for t in trials}
    if len(trials) > 1 and len(reasons) == 1 and None not in reasons:
        lines.append(f"no shared trunk: all {len(trials)} trials train their tokens alone: "
                     + ("no two differ only in train.tokens" if reasons == {ALONE}
                        else reasons.pop()))
    else:
        for trial in trials:
            if trial.trial_id in plan.alone and (to_run is None or trial.trial_id in to_run):
                lines.append(f"alone {trial.trial_id[:12]}  {trial.label}: "
                             f"{plan.alone[trial.trial_id]}")
    trained, independent = plan.tokens(trials)
    if independent:
        lines.append(f"the sweep from nothing trains {_short(trained)} tokens, "
                     f"{_short(independent)} if every trial trained alone "
                     f"(ratio {trained / independent:.2f})")
    # (after a stop, every trial not done but some part-trained: "from nothing" alone was
    # said, too much)
    begun = any((own or {}).values()) or any((trunk_at or {}).values())
    if to_run and (len(to_run) < len(trials) or begun):
        left = plan.tokens_to_run(trials, to_run, trunk_at or {}, own)
        how = [w for w, ok in (("trunks go on from where they stand", plan.families),
                               ("part-trained trials from their checkpoints", any(
                                   (own or {}).values()))) if ok]
        lines.append(f"the {len(to_run)} trial{'s' * (len(to_run) != 1)} to run train "
                     f"{_short(left)} tokens from here"
                     + (f" ({'; '.join(how)})" if how else ""))
    return lines
