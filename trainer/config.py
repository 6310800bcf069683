"""Typed configuration of one training run, registered in Hydra's ConfigStore.

Every YAML under `conf/` is merged onto these dataclasses, so an unknown key or a wrong type is
rejected by OmegaConf before anything runs. `compose()` is the one way to go from Hydra
overrides to a resolved, frozen `Config`; raw `DictConfig` never leaves this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class Param(str, enum.Enum):
    """Parametrization of the model."""

    mup = "mup"  # maximal-update parametrization: the best LR transfers across width
    sp = "sp"  # standard parametrization, the baseline muP is compared with


class Positions(str, enum.Enum):
    rope = "rope"
    learned = "learned"


class HiddenWeightDecay(str, enum.Enum):
    """How muP treats weight decay on hidden matrices, whose Adam LR is η/m.

    `width_invariant` multiplies λ by m so that the decoupled decay η·λ per step does not change
    with width (what the `mup` package does); `constant` keeps λ, so decay per step shrinks as 1/m.
    """

    width_invariant = "width_invariant"
    constant = "constant"


class ScheduleName(str, enum.Enum):
    power = "power"
    wsd = "wsd"
    cosine = "cosine"
    constant = "constant"
    linear = "linear"


class DecayShape(str, enum.Enum):
    linear = "linear"
    cosine = "cosine"
    exp = "exp"
    one_minus_sqrt = "1-sqrt"


class DataSource(str, enum.Enum):
    pystdlib = "pystdlib"  # the running Python's standard library sources, offline
    synthetic = "synthetic"  # a random Markov chain of known entropy
    hf = "hf"  # a dataset on the Hugging Face hub
    files = "files"  # local text / jsonl / parquet files


class BatchSchedule(str, enum.Enum):
    constant = "constant"
    norm_test = "norm_test"  # grow the batch when the norm test fails (Lau et al. 2024)


MAX_SEED = 2 ** 63 - 1
"""The largest seed: `torch.manual_seed` takes a 64-bit integer (a larger one failed the run
after its folder was made, and in a sweep after its retries)."""


@dataclass(frozen=True)
class ModelConfig:
    """Decoder-only GPT, pre-norm, no biases."""

    width: int = 128
    """Residual stream width d_model."""
    depth: int = 2
    """Number of transformer blocks."""
    head_dim: int = 32
    """Width of one attention head; heads = width / head_dim."""
    mlp_ratio: int = 4
    """Hidden width of the MLP as a multiple of `width`."""
    context_len: int = 1024
    """Longest sequence the model accepts (size of the learned position table)."""
    positions: Positions = Positions.rope
    param: Param = Param.mup
    base_width: int = 128
    """Width at which muP coincides with SP; m = width / base_width."""
    init_std: float = 0.02
    """σ: init std of every matrix at base width."""
    input_mult: float = 1.0
    """α_in: multiplier on the embedding output."""
    output_mult: float = 1.0
    """α_out: readout logits are multiplied by α_out / m under muP."""
    attn_mult: float = 1.0
    """Attention scores are q·k × attn_mult/√d_head, in SP and at muP's base head width; under
    muP they scale as 1/d_head from there: q·k × attn_mult·√base_head_dim/d_head."""
    base_head_dim: int | None = None
    """Head width at base width (muP); unset: `head_dim`, i.e. the head width is held fixed as
    the model widens and only the number of heads grows."""


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from and how they are cut."""

    source: DataSource = DataSource.pystdlib
    name: str | None = None
    """Hub dataset name (`source=hf`)."""
    config_name: str | None = None
    """Hub dataset configuration (`source=hf`)."""
    revision: str | None = None
    """Hub dataset revision, a branch, tag or commit (`source=hf`); unset: the default branch,
    whose content may change under the same trial id, so pin it for results that must last."""
    split: str = "train"
    """Split that training reads (`hf`, `files`)."""
    val_split: str | None = None
    """Split held out for eval; when unset, documents are held out by a hash of their index."""
    text_field: str = "text"
    """Column holding the text (`hf`, `files`)."""
    paths: list[str] = field(default_factory=list)
    """Local files (`source=files`): .txt, .jsonl/.json or .parquet; a folder or a glob
    pattern stands for its files (`trainer.data_files`)."""
    val_paths: list[str] = field(default_factory=list)
    """Local files of the eval split (`source=files`), as `paths`; unset: the eval split is
    held out of `paths` (`holdout_fraction`)."""
    streaming: bool = True
    """Stream a hub dataset instead of downloading it whole."""
    max_tokens: int = 0
    """Stop tokenizing a source after this many training tokens and their held-out share
    (0: read it all)."""
    tokenizer: str | None = None
    """Path of a `tokenizers` JSON file; bytes (vocab 256) when unset."""
    holdout_fraction: float = 0.05
    """Fraction of documents held out for eval when there is no `val_split` or `val_paths`."""
    vocab_size: int = 16
    """Synthetic source: number of symbols."""
    order: int = 2
    """Synthetic source: order k of the Markov chain."""
    concentration: float = 0.3
    """Synthetic source: Dirichlet concentration of each transition row (lower = lower entropy)."""
    num_tokens: int = 2_000_000
    """Synthetic source: tokens generated for training (eval gets a tenth of that)."""
    chain_seed: int = 1234
    """Synthetic source: seed of the transition table (the chain itself, not the data order)."""
    cache_dir: str = "${oc.env:PROXYSWEEP_CACHE,${oc.env:HOME,.}/.cache/proxysweep}"
    """Token caches, keyed by content."""
    fingerprint: str | None = None
    """Hash of the content read where the keys above do not pin it (`pystdlib`, `files`, a
    tokenizer file); set by `compose` (`trainer.fingerprint`), checked when the data is read."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with per-group LR and weight-decay multipliers from the parametrization."""

    lr: float = 3e-3
    """Peak learning rate η (under the Power schedule: its cap η_max)."""
    weight_decay: float = 0.0
    """Decoupled weight decay λ on matrices (norm gains are never decayed)."""
    timescale: float | None = None
    """AdamW timescale τ = B/(η·λ·D) as a fraction of training; when set, λ = B/(η·τ·D)."""
    hidden_weight_decay: HiddenWeightDecay = HiddenWeightDecay.width_invariant
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule as a pure function of tokens seen."""

    name: ScheduleName = ScheduleName.power
    warmup_tokens: int | None = None
    """Linear warmup from 0 over this many tokens. Unset (null): the default rule of
    `trainer.schedules.default_warmup_tokens`, filled in by `compose` from `train.tokens`."""
    decay_fraction: float = 0.1
    """Fraction of the token budget spent in the final decay (power, wsd)."""
    decay_shape: str = "exp"
    """Shape of the final decay (power, wsd): linear, cosine, exp or 1-sqrt. A plain string,
    checked by `validate`, because OmegaConf matches enums by member name and `1-sqrt` is
    not a valid one."""
    min_lr_ratio: float = 0.0
    """LR at the end of training as a fraction of the peak (cosine, linear, and decay shapes
    linear, cosine, 1-sqrt)."""
    exp_final_ratio: float = 0.01
    """Decay shape `exp` multiplies the LR by this ratio over the decay window."""
    a: float = 4.0
    """Power schedule: η(n) = min(η_max, β·a·n^b)."""
    b: float = -0.51
    """Power schedule exponent."""


@dataclass(frozen=True)
class TrainConfig:
    """Budget, batching and cadences of the training loop."""

    batch_size: int = 16
    """Sequences per optimizer step."""
    micro_batch_size: int = 0
    """Sequences per forward/backward pass (0: the whole batch, no accumulation)."""
    seq_len: int = 128
    tokens: int = 1_000_000
    """Training budget T in tokens."""
    eval_every_tokens: int = 0
    """Held-out eval cadence in tokens (0: only at the end)."""
    eval_tokens: int = 65_536
    """Held-out tokens per eval."""
    checkpoint_every_tokens: int = 0
    """Checkpoint cadence in tokens (0: no intermediate checkpoints)."""
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    device: str = "auto"
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:N`."""
    compile: bool | None = None
    """Wrap the model in torch.compile: `null` (the default) compiles on CUDA and runs eagerly
    on CPU, where compiling costs more than it saves for a proxy; `true` or `false` force it.
    How a run executes, not what it trains: see `trainer.identity`."""
    divergence_factor: float = 2.0
    """A loss above this multiple of the first step's loss (or NaN/inf) ends the run `diverged`."""
    world_size: int = 1
    """Processes that shard the run with FSDP2 (gloo on CPU, NCCL on CUDA); `trainer.run`
    starts them itself, or they come from `torchrun`. Each rank takes batch_size / world_size
    sequences of every batch."""
    batch_schedule: BatchSchedule = BatchSchedule.constant
    """`constant`, or `norm_test`: every `norm_test_every` steps, estimate
    T = Var/(B·‖g‖²) from the micro-batch gradients of the step, and when T > η² grow the
    global batch to ⌈T·B/η²⌉ sequences (whole micro-batches on every rank, never shrinking,
    at most `max_batch_size`). The schedule stays a function of tokens: the LR schedule and
    the token budget do not change; `derived.*` values are those of the initial batch."""
    norm_test_eta: float = 0.1
    """η of the norm test: the gradient's relative noise that the batch may carry."""
    norm_test_every: int = 10
    """Steps between norm tests (a test step reduces gradients after every micro-batch)."""
    max_batch_size: int = 0
    """Largest global batch the norm test may grow to (0: no cap)."""


@dataclass(frozen=True)
class TrackingConfig:
    """Where metrics go; none of this changes the result of a run."""

    uri: str | None = None
    """MLflow tracking URI; metrics go to stdout and JSONL only when unset."""
    experiment: str = "proxysweep"


@dataclass(frozen=True)
class Config:
    """One training run: the unit a sweep varies and a trial id hashes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    storage_root: str = "runs"
    """Runs live in STORAGE_ROOT/<config id>/ unless `run_dir` is given."""
    run_dir: str | None = None
    """Directory of this run (metrics, summary, checkpoints); derived from the id when unset."""
    checkpoint_dir: str | None = None
    """Checkpoints; RUN_DIR/checkpoints when unset."""


def _schema(cls: type) -> DictConfig:
    # OmegaConf marks a frozen dataclass read-only, which would also forbid Hydra's merges of
    # YAML and overrides; the schema node is made writable and the frozen type comes back in
    # `OmegaConf.to_object`.
    node = OmegaConf.structured(cls)
    _clear_readonly(node)
    return node


def _clear_readonly(node: DictConfig) -> None:
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _clear_readonly(child)
        else:
            child._set_flag("readonly", None)


def register_configs() -> None:
    """Register the schemas so every YAML in `conf/` is type-checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=_schema(Config))
    cs.store(group="model", name="model_schema", node=_schema(ModelConfig))
    cs.store(group="data", name="data_schema", node=_schema(DataConfig))
    cs.store(group="optim", name="optim_schema", node=_schema(OptimConfig))
    cs.store(group="schedule", name="schedule_schema", node=_schema(ScheduleConfig))


register_configs()
