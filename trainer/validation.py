"""Checks of a config that need no training, so a sweep can validate every trial up front.

Each problem is one sentence naming the key and the fix. `problems(cfg)` collects them all;
`check(cfg)` raises `ConfigError` with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import os
import threading
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from trainer.config import (
    MAX_SEED,
    BatchSchedule,
    Config,
    DataConfig,
    DataSource,
    DecayShape,
    ModelConfig,
    Param,
    Positions,
    ScheduleName,
)
from trainer.data_files import DATA_SUFFIXES, folder_files, is_pattern, split_pattern, splits_of
from trainer.errors import ConfigError

DROPPED_FRACTION = 0.01
"""A constant-batch run trains whole batches; a budget that leaves more than this fraction of
itself untrained is noted (`notes`)."""


def check(cfg: Config, *, network: bool = True) -> None:
    """Raise `ConfigError` listing every problem of `cfg`.

    Args:
        cfg: the resolved config.
        network: also check that a hub dataset is reachable (one short request).
    """
    found = problems(cfg, network=network)
    found += _storage_problems(str(cfg.storage_root))  # (here only: it makes the folder)
    if found:
        raise ConfigError(found)


def problems(cfg: Config, *, network: bool = True, here: bool = True) -> list[str]:
    """Every problem of `cfg`, one sentence each (empty when the config can run). `here`:
    it will train on this machine, so a CUDA device must be visible to ask for one (a
    sweep's driver validates trials that train on its workers, which may have GPUs it has
    not)."""
    found = model_problems(cfg.model) + _optim_problems(cfg) + _train_problems(cfg, here)
    if not 0 <= cfg.seed <= MAX_SEED:
        found.append(f"seed={cfg.seed} must be a whole number from 0 to 2^63 - 1 (what "
                     "torch.manual_seed takes)")
    found += _schedule_problems(cfg)
    found += _data_problems(cfg.data, network=network)
    if cfg.data.source is not DataSource.synthetic:
        from trainer.paths import folder_problem

        # (where the run trains here, that it can be written: /proc/x passed, and the run
        # failed after its checks; a sweep's workers may have folders its driver has not)
        if in_way := folder_problem(cfg.data.cache_dir, create=False, probe=here):
            found.append(f"data.cache_dir={cfg.data.cache_dir}: {in_way}; {CACHE_FIX}")
    if not found and cfg.data.source is DataSource.files:
        found += _too_short(cfg)
    if cfg.tracking.uri and not str(cfg.tracking.experiment).strip():
        # (MLflow refused the name once the run had started: a traceback, a run folder left)
        found.append("tracking.experiment is empty: give the MLflow experiment's name, e.g. "
                     "tracking.experiment=proxysweep (the default)")
    if cfg.tracking.uri:
        from trainer.reporting import redact, store_uri_problem

        found += [p for p in [store_uri_problem(
            cfg.tracking.uri, named=f"tracking.uri={redact(cfg.tracking.uri)}",
            flag="tracking.uri (or leave it unset to log to files only)")] if p]
    if network and cfg.tracking.uri and not found:
        from trainer.reporting import redact, unreachable_server

        if (reason := unreachable_server(cfg.tracking.uri)) and reason.startswith("it answers"):
            found.append(f"tracking.uri={redact(cfg.tracking.uri)}: {reason} to tracking.uri "
                         "(or leave it unset to log to files only)")
        elif reason:
            found.append(f"tracking.uri={redact(cfg.tracking.uri)} cannot be reached: {reason}; "
                         "start the server, or leave tracking.uri unset to log to files only")
    return found


CACHE_FIX = ("give a folder this machine can write the token cache to (PROXYSWEEP_CACHE, or "
             "data.cache_dir)")


def model_problems(m: ModelConfig) -> list[str]:
    """The model config's problems alone (`trainer.coord_check` builds only models)."""
    found = []
    for key in ("width", "depth", "head_dim", "base_width", "context_len", "mlp_ratio"):
        if getattr(m, key) < 1:
            found.append(f"model.{key}={getattr(m, key)} must be a positive integer")
    if m.head_dim >= 1 and m.width % m.head_dim:
        found.append(f"model.width={m.width} is not divisible into heads of "
                     f"model.head_dim={m.head_dim}: make the width a multiple of head_dim")
    if m.positions is Positions.rope and m.head_dim % 2:
        found.append(f"model.head_dim={m.head_dim} must be even for rotary positions: use an "
                     "even head_dim or model.positions=learned")
    for key in ("init_std", "input_mult", "output_mult", "attn_mult"):
        if not 0 < getattr(m, key) < math.inf:  # (NaN compares false: refused too)
            found.append(f"model.{key}={getattr(m, key)} must be > 0 and finite")
    if m.base_head_dim is not None and m.base_head_dim < 1:
        found.append(f"model.base_head_dim={m.base_head_dim} must be a positive integer, or "
                     "null when the head width does not grow with the model")
    return found


def _optim_problems(cfg: Config) -> list[str]:
    o, found = cfg.optim, []
    if not 0 < o.lr < math.inf:
        found.append(f"optim.lr={o.lr} must be > 0 and finite: give a positive learning rate")
    if not 0 <= o.weight_decay < math.inf:
        found.append(f"optim.weight_decay={o.weight_decay} must be >= 0 and finite")
    if o.timescale is not None and not 0 < o.timescale < math.inf:
        found.append(f"optim.timescale={o.timescale} must be > 0 (a fraction of training, "
                     "e.g. 0.2), or null to use optim.weight_decay")
    if o.timescale is not None and o.weight_decay > 0:
        found.append("optim.timescale and optim.weight_decay are both set: give one "
                     "(optim.weight_decay=0 when sweeping the timescale)")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(o, key) < 1:
            found.append(f"optim.{key}={getattr(o, key)} must be in [0, 1)")
    if not o.grad_clip >= 0:  # (inf clips nothing, as 0 does)
        found.append(f"optim.grad_clip={o.grad_clip} must be >= 0 (0 disables clipping)")
    if not 0 < o.eps < math.inf:
        found.append(f"optim.eps={o.eps} must be > 0 and finite (AdamW's denominator floor, "
                     "e.g. 1e-8)")
    return found


def _train_problems(cfg: Config, here: bool = True) -> list[str]:
    t = cfg.train
    found = [f"train.{key}={getattr(t, key)} must be a whole number >= 1"
             for key in ("batch_size", "seq_len") if getattr(t, key) < 1]
    # (the checks of what a batch holds need both: the others are said with these)
    sized = not found
    micro = t.micro_batch_size or t.batch_size
    # (over several ranks the micro-batch divides each rank's share: `_world_problems`)
    if sized and (micro < 1 or (t.batch_size % micro and t.world_size <= 1)):
        found.append(f"train.batch_size={t.batch_size} is not divisible by "
                     f"train.micro_batch_size={t.micro_batch_size}: pick a divisor of the batch")
    if t.seq_len > cfg.model.context_len:
        found.append(f"train.seq_len={t.seq_len} exceeds model.context_len="
                     f"{cfg.model.context_len}: shorten the sequences or raise the context")
    batch_tokens = t.batch_size * t.seq_len
    if t.tokens <= 0:
        found.append(f"train.tokens={t.tokens} must be > 0: give the number of tokens to "
                     "train on, e.g. train.tokens=1_000_000")
    elif sized and t.tokens < batch_tokens:
        found.append(f"train.tokens={t.tokens} is less than one batch ({batch_tokens} tokens "
                     "= batch_size × seq_len): raise train.tokens or shrink the batch")
    if not t.divergence_factor > 1:  # (NaN too: it compares false with every loss)
        found.append(f"train.divergence_factor={t.divergence_factor} must be > 1")
    if sized:
        found += _world_problems(t)
    if sized and t.batch_schedule is BatchSchedule.norm_test:
        found += _norm_test_problems(t)
    if t.device not in ("auto", "cpu") and not t.device.startswith("cuda"):
        found.append(f"train.device={t.device!r} is not one of auto, cpu, cuda, cuda:N")
    if here and t.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            found.append(f"train.device={t.device} but no CUDA device is visible: use "
                         "train.device=auto or cpu")
    for key, zero in (("eval_every_tokens", "an eval only at the end"),
                      ("checkpoint_every_tokens", "no checkpoints")):
        if getattr(t, key) < 0:
            found.append(f"train.{key}={getattr(t, key)} must be >= 0 (0: {zero})")
    if t.seq_len >= 1 and t.eval_tokens < t.seq_len:
        found.append(f"train.eval_tokens={t.eval_tokens} is less than one sequence "
                     f"(train.seq_len={t.seq_len}): give at least that many held-out tokens")
    for key in ("log_every_steps", "keep_checkpoints"):
        if getattr(t, key) < 1:
            found.append(f"train.{key}={getattr(t, key)} must be a whole number >= 1")
    return found


PEAK_NOTED = 0.9
"""A cosine or linear run whose LR peaks below this fraction of `optim.lr` is noted: its
warmup is long enough that the decay has cut the LR before the warmup ends."""


def _peak_fraction(cfg: Config, warmup: int | None = None) -> float:
    """The highest LR of the run's schedule over its budget, as a fraction of optim.lr (with
    another `warmup`, if given)."""
    from trainer.schedules import ScheduleInputs, learning_rate

    sched = cfg.schedule if warmup is None else dataclasses.replace(cfg.schedule,
                                                                     warmup_tokens=warmup)
    inputs = ScheduleInputs(peak_lr=1.0, total_tokens=cfg.train.tokens,
                            batch_size=cfg.train.batch_size)
    return max(learning_rate(sched, inputs, cfg.train.tokens * i / 1000) for i in range(1001))


def _world_problems(t) -> list[str]:
    if t.world_size < 1:
        return [f"train.world_size={t.world_size} must be >= 1"]
    if t.batch_size % t.world_size:
        up = -(-t.batch_size // t.world_size) * t.world_size
        return [f"train.batch_size={t.batch_size} is not divisible by train.world_size="
                f"{t.world_size}: each rank takes an equal share of the batch; give "
                f"train.batch_size={up}, or a world size that divides {t.batch_size}"]
    local = t.batch_size // t.world_size
    if t.world_size > 1 and t.micro_batch_size and local % t.micro_batch_size:  # (one rank:
        # the batch's own divisibility, said by `_train_problems`)
        return [f"train.micro_batch_size={t.micro_batch_size} does not divide the "
                f"{local} sequences per rank (train.batch_size / train.world_size): pick a "
                "divisor"]
    if t.world_size > 1 and t.device != "cpu":
        import torch
        if torch.cuda.is_available() and torch.cuda.device_count() < t.world_size:
            return [f"train.world_size={t.world_size} but only {torch.cuda.device_count()} "
                    "GPUs are visible: lower train.world_size or give the run more GPUs"]
    return []


def _norm_test_problems(t) -> list[str]:
    found = []
    if t.world_size < 1 or t.batch_size % t.world_size:
        return found  # said by _world_problems
    per_rank = t.batch_size // t.world_size
    if t.micro_batch_size < 1 or per_rank < 2 * t.micro_batch_size:
        found.append(f"train.batch_schedule=norm_test estimates the gradient noise from the "
                     f"micro-batches of each rank, but train.micro_batch_size="
                     f"{t.micro_batch_size} leaves fewer than 2 per rank ({per_rank} "
                     "sequences): set train.micro_batch_size to at most half of "
                     "train.batch_size / train.world_size")
    if not 0 < t.norm_test_eta < math.inf:
        found.append(f"train.norm_test_eta={t.norm_test_eta} must be > 0")
    if t.norm_test_every < 1:
        found.append(f"train.norm_test_every={t.norm_test_every} must be >= 1 (steps)")
    unit = max(t.micro_batch_size, 1) * t.world_size
    if t.max_batch_size and (t.max_batch_size < t.batch_size or t.max_batch_size % unit):
        found.append(f"train.max_batch_size={t.max_batch_size} must be 0 (no cap) or a "
                     f"multiple of train.micro_batch_size × train.world_size = {unit} that is "
                     f"at least train.batch_size={t.batch_size}")
    return found


def _schedule_problems(cfg: Config) -> list[str]:
    s, found = cfg.schedule, []
    shapes = [d.value for d in DecayShape]
    if s.decay_shape not in shapes:
        found.append(f"schedule.decay_shape={s.decay_shape!r} is not one of {', '.join(shapes)}")
    if not 0 <= s.decay_fraction <= 1:
        found.append(f"schedule.decay_fraction={s.decay_fraction} must be in [0, 1]")
    if not 0 <= s.min_lr_ratio <= 1:
        found.append(f"schedule.min_lr_ratio={s.min_lr_ratio} must be in [0, 1]")
    if not 0 < s.exp_final_ratio <= 1:
        found.append(f"schedule.exp_final_ratio={s.exp_final_ratio} must be in (0, 1]")
    # Unset (None) is the default rule, which fits every budget; only a value the user chose
    # can be refused.
    if s.warmup_tokens is not None and s.warmup_tokens < 0:
        found.append(f"schedule.warmup_tokens={s.warmup_tokens} must be >= 0: give a token "
                     "count, or leave it unset for the default")
    elif s.warmup_tokens is not None and s.warmup_tokens > cfg.train.tokens > 0:
        found.append(f"schedule.warmup_tokens={s.warmup_tokens} exceeds train.tokens="
                     f"{cfg.train.tokens}: lower schedule.warmup_tokens, or leave it unset "
                     "(null) for the default, which fits any budget")
    if not 0 < s.a < math.inf:
        found.append(f"schedule.a={s.a} must be > 0 and finite")
    if s.name is ScheduleName.power and not -math.inf < s.b <= 0:
        found.append(f"schedule.b={s.b} must be <= 0: the Power schedule's LR falls as "
                     "tokens grow (the paper's b is -0.51)")
    return found


def _data_problems(d: DataConfig, *, network: bool) -> list[str]:
    found = []
    if d.max_tokens < 0:
        found.append(f"data.max_tokens={d.max_tokens} must be >= 0 (0 reads the whole source)")
    if not 0 < d.holdout_fraction < 1 and d.val_split is None and not d.val_paths:
        found.append(f"data.holdout_fraction={d.holdout_fraction} must be in (0, 1)")
    if d.tokenizer is not None and Path(d.tokenizer).is_dir():
        found.append(_tokenizer_folder(Path(d.tokenizer)))
    elif d.tokenizer is not None and not Path(d.tokenizer).is_file():
        found.append(f"data.tokenizer={d.tokenizer}: no such file; give the path of a "
                     "tokenizers JSON file, or leave it unset for bytes")
    if d.paths and d.source is not DataSource.files:
        found.append(f"data.paths is set, but data.source={d.source.value} reads no files: "
                     "add data=files to train on them ('data=files' 'data.paths=[...]')")
    if d.val_paths and d.source is not DataSource.files:
        found.append(f"data.val_paths is set, but data.source={d.source.value} reads no files"
                     ": it is the eval split of data=files ('data=files' 'data.paths=[...]' "
                     "'data.val_paths=[...]')" + ("; a hub dataset's is data.val_split"
                                                 if d.source is DataSource.hf else ""))
    if d.source is not DataSource.hf and d.val_split is not None:
        # (the files were read again as the "validation" split: eval on the training data;
        # `data.split`, never read off the hub, is a note and an unread key instead)
        found.append(f"data.val_split={d.val_split}: data={d.source.value} has no named "
                     f"splits (only data=hf does); it holds out data.holdout_fraction="
                     f"{d.holdout_fraction:g} of the documents for eval: drop data.val_split"
                     + (", or give the eval split's files as data.val_paths=[...]"
                        if d.source is DataSource.files else ""))
    if d.source is DataSource.files:
        found += _files_problems(d)
    elif d.source is DataSource.hf:
        found += _hub_problems(d, network=network)
    elif d.source is DataSource.synthetic:
        if d.vocab_size < 2 or d.order < 1 or d.vocab_size**d.order > 2**22:
            found.append(f"data.vocab_size={d.vocab_size}, data.order={d.order}: need "
                         "vocab_size >= 2, order >= 1 and vocab_size**order <= 4194304")
        if not 0 < d.concentration < math.inf:
            found.append(f"data.concentration={d.concentration} must be > 0 and finite")
        if d.num_tokens < 1:
            found.append(f"data.num_tokens={d.num_tokens} must be a positive number of tokens to "
                         "generate, e.g. data.num_tokens=2_000_000 (the default)")
    if d.source is not DataSource.synthetic:  # (of the files there: beside a missing one's)
        from trainer.text import content_problems  # (a little of the files read, once there)

        found += content_problems(d)
    return found


def _too_short(cfg: Config) -> list[str]:
    """Files whose bytes cannot make one training sequence: no tokenizer makes more tokens
    than a text has bytes (bytes make exactly as many), so this is sure before tokenizing.
    Not of parquet files, which are compressed: 8,000 characters of text in 426 bytes were
    refused as too few for a sequence of 1,024 (and a fake one was called small, not fake)."""
    if any(str(p).endswith(".parquet") for p in [*cfg.data.paths, *cfg.data.val_paths]):
        return []
    size = sum(Path(p).stat().st_size for p in cfg.data.paths)
    if size <= cfg.train.seq_len + 1:
        return [f"data.paths: {size} bytes in all, too few for one sequence of train.seq_len="
                f"{cfg.train.seq_len} tokens (plus its eval split): add data, or lower "
                "train.seq_len"]
    if cfg.data.val_paths:  # (the eval split: its own files)
        size = sum(Path(p).stat().st_size for p in cfg.data.val_paths)
        return [] if size > cfg.train.seq_len + 1 else [
            f"data.val_paths: {size} bytes in all, too few for one eval sequence of "
            f"train.seq_len={cfg.train.seq_len} tokens plus one: add data, or lower "
            "train.seq_len"]
    # One .txt file is one document: its eval split is its last holdout_fraction, sure too.
    (path,) = cfg.data.paths if len(cfg.data.paths) == 1 else (None,)
    held = max(int(size * cfg.data.holdout_fraction), 1)
    if path is None or not path.lower().endswith(".txt"):
        return []
    if held <= cfg.train.seq_len:
        return [f"data.paths: the held-out {cfg.data.holdout_fraction:g} of {path} is "
                f"{held} bytes at most, too few for one eval sequence of train.seq_len="
                f"{cfg.train.seq_len} tokens plus one: raise data.holdout_fraction, add data, "
                "or lower train.seq_len"]
    if size - held <= cfg.train.seq_len:
        return [f"data.paths: what data.holdout_fraction={cfg.data.holdout_fraction:g} leaves "
                f"of {path} to train on is {size - held} bytes at most, too few for one "
                f"sequence of train.seq_len={cfg.train.seq_len} tokens plus one: lower "
                "data.holdout_fraction, add data, or lower train.seq_len"]
    return []


def _files_problems(d: DataConfig) -> list[str]:
    if not d.paths:
        return ["data.paths is empty: give the files, e.g. 'data.paths=[/data/a.jsonl]'"]
    found = _file_list_problems("data.paths", d.paths)
    found += _file_list_problems("data.val_paths", d.val_paths)
    trained = {_inode(p) for p in d.paths} - {None} if d.val_paths else set()
    both = [p for p in d.val_paths if _inode(p) in trained]
    if both:  # (its eval loss would be of text it trained on)
        found.append(f"data.val_paths: {both[0]} is in data.paths too, so the eval split would "
                     "be text the run trains on: give each file to one of them")
    return found


def _inode(path: str) -> tuple[int, int] | None:
    # (one file under two names, a link or another spelling of its path, is one inode)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _file_list_problems(key: str, paths: list[str]) -> list[str]:
    # One stat a file: a folder or a pattern stands for thousands of shards, and a sweep
    # validates each of its trials.
    found: list[str] = []
    seen: dict[tuple[int, int], int] = {}
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and S_ISDIR(st.st_mode):
            saved = _saved_with_save_to_disk(Path(path))
            found.append(f"{key}: {path} {saved}" if saved else _folder_problem(key, path))
        elif (st is None or not S_ISREG(st.st_mode)) and is_pattern(path):
            found.append(f"{key}: the pattern {path} matches no files; fix it (relative "
                         f"patterns are read from {os.getcwd()})")
        elif st is None or not S_ISREG(st.st_mode):
            found.append(f"{key}: {path} does not exist; fix the path")
        elif st.st_size == 0:
            found.append(f"{key}: {path} is empty; give files that hold text")
        elif not path.lower().endswith(DATA_SUFFIXES):
            found.append(f"{key}: {path} is not .txt, .jsonl, .json or .parquet; convert "
                         "it to one of those (compressed files: decompress them first)")
        if st is not None and S_ISREG(st.st_mode):
            # (the same file twice trained at double weight, without a word)
            first = seen.setdefault((st.st_dev, st.st_ino), i)
            if first != i:
                found.append(f"{key} lists one file twice ({paths[first]} and {path}): give "
                             "each file once")
    suffixes = {os.path.splitext(p)[1].lower().replace(".jsonl", ".json") for p in paths}
    if len(suffixes) > 1:
        said = sorted({os.path.splitext(p)[1].lower() or "no suffix" for p in paths})
        found.append(f"{key} mixes file types ({', '.join(said)}): give files of one type")
    return found


def _folder_problem(key: str, path: str) -> str:
    # (a folder left unexpanded by `data_files.expand`: no data files, or several splits)
    files = folder_files(path)
    if not files:
        return (f"{key}: the folder {path} holds no {', '.join(DATA_SUFFIXES)} files; "
                "give the folder (or files) that hold the text")
    train, held_out = splits_of(path, files)
    return (f"{key}: the folder {path} holds more than one split ({train} and {held_out}): "
            "give each split's files, e.g. "
            f"'data.paths=[{split_pattern(train, files)}]' "
            f"'data.val_paths=[{split_pattern(held_out, files)}]'")


def _tokenizer_folder(folder: Path) -> str:
    # (it suggested FOLDER/tokenizer.json whether or not the folder held one)
    said = f"data.tokenizer={folder} is a folder"
    if (folder / "tokenizer.json").is_file():
        return (f"{said}; give the tokenizers JSON file in it, e.g. "
                f"data.tokenizer={folder / 'tokenizer.json'}")
    if found := sorted(folder.glob("*.json")):
        return (f"{said} without a tokenizer.json; give the tokenizers JSON file, e.g. "
                f"data.tokenizer={found[0]} if that is it")
    return (f"{said} without a tokenizers JSON file (a model's tokenizer saved with "
            "`tokenizer.save_pretrained` writes one, tokenizer.json): give that file's path, "
            "or leave data.tokenizer unset for bytes")


def _saved_with_save_to_disk(path: Path) -> str | None:
    """What to do with a folder `datasets` wrote with `save_to_disk` (a Dataset, or a
    DatasetDict of splits), or None for anything else. Its arrow files are `datasets`' own
    cache format, not a corpus: written as parquet they are."""
    from trainer.data_files import _saved_by_datasets

    if not path.is_dir() or not _saved_by_datasets(str(path)):
        return None
    if (path / "dataset_dict.json").is_file():  # a DatasetDict: one folder per split
        return ("is a DatasetDict saved with save_to_disk; write its splits as parquet (for "
                "name, split in datasets.load_from_disk(PATH).items(): "
                "split.to_parquet(f'{name}.parquet')) and give them: data=files "
                "'data.paths=[train.parquet]' 'data.val_paths=[validation.parquet]' (or "
                "without data.val_paths, eval is held out of data.paths: "
                "data.holdout_fraction)")
    return ("is a dataset saved with save_to_disk; write it as parquet "
            "(datasets.load_from_disk(PATH).to_parquet('data.parquet')) and give that file")


def _as_data_paths(path: str) -> str:
    """The overrides of data=files for a local file or folder: the folder, or where it holds
    several splits, a pattern for each split's files."""
    files = folder_files(path) if os.path.isdir(path) else []
    splits = splits_of(path, files) if files else None
    if splits is None:
        return (f"'data.paths=[{path}]' (its eval split is held out of them: "
                "data.holdout_fraction)")
    return (f"'data.paths=[{split_pattern(splits[0], files)}]' "
            f"'data.val_paths=[{split_pattern(splits[1], files)}]'")


def _hub_problems(d: DataConfig, *, network: bool) -> list[str]:
    if not d.name:
        return ["data.name is not set: give a hub dataset, e.g. data.name=roneneldan/TinyStories"]
    if Path(d.name).exists() or d.name.startswith(("/", "./", "../", "~")):
        if not Path(d.name).expanduser().exists():
            return [f"data.name={d.name} is a local path, not a hub dataset, and nothing is "
                    "there: give a hub dataset's name (e.g. data.name=roneneldan/TinyStories), "
                    "or your files with data=files 'data.paths=[FILE_OR_FOLDER]'"]
        if saved := _saved_with_save_to_disk(Path(d.name)):  # (data=files would refuse it)
            return [f"data.name={d.name} is a local path, not a hub dataset: it {saved}"]
        return [f"data.name={d.name} is a local path, not a hub dataset: use data=files "
                f"{_as_data_paths(d.name)}"]
    if sliced := slice_problems(d):
        return sliced
    if not network or os.environ.get("HF_HUB_OFFLINE") == "1" or _hub_tokens_cached(d):
        return []
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        huggingface_hub.HfApi().dataset_info(d.name, timeout=10)
    except RepositoryNotFoundError:
        return [f"data.name={d.name} is not a dataset on the Hugging Face hub: check the name"]
    except Exception as err:  # any transport failure means the same thing to the user
        return [f"data.name={d.name} needs the Hugging Face hub, which is unreachable "
                f"({type(err).__name__}): connect to the network, or save the data locally "
                "and use data=files data.paths=[...]"]
    return split_problems(d)


def slice_problems(d: DataConfig) -> list[str]:
    """A slice of a split (`train[:10%]`) in a streamed dataset, which `datasets` refuses
    ("Bad split", as for a split that is not there)."""
    return [f"data.{key}={split}: a streamed dataset cannot be sliced; set "
            "data.streaming=false (it downloads the dataset) or give the whole split"
            for key, split in (("split", d.split), ("val_split", d.val_split))
            if split is not None and "[" in split and d.streaming]


def split_problems(d: DataConfig) -> list[str]:
    """`data.split` or `data.val_split` naming a split the dataset does not have. A
    val_split was found missing only once the whole training split had streamed. Nothing is
    said when the names cannot be read in `SPLIT_NAMES_S`: the run then says what failed."""
    from trainer.data import split_names

    found = []
    have = _split_names(d.name, d.config_name, d.revision)
    for key, split in (("split", d.split), ("val_split", d.val_split)):
        for name in [] if split is None or have is None else split_names(split):
            if name not in have:
                found.append(f"data.{key}={split}: data.name={d.name} has no split {name} (its "
                             f"splits: {', '.join(have)}); give one of them")
    return found


SPLIT_NAMES_S = 20.0
"""How long a check waits for a hub dataset's split names (`split_problems`)."""


@functools.lru_cache(maxsize=64)
def _split_names(name: str, config_name: str | None, revision: str | None
                 ) -> tuple[str, ...] | None:
    """A dataset's split names (a few small requests, no data; once per process for each
    dataset: a fused group checks each member), None when they cannot be read in time."""
    import datasets

    answer: list = []

    def read() -> None:
        with contextlib.suppress(Exception):  # a gated dataset, a script, the network
            answer.append(tuple(datasets.get_dataset_split_names(name, config_name,
                                                                 revision=revision)))

    reader = threading.Thread(target=read, daemon=True)  # (the call takes no timeout)
    reader.start()
    reader.join(SPLIT_NAMES_S)
    return answer[0] if answer else None


def _hub_tokens_cached(d: DataConfig) -> bool:
    from trainer.data import Tokenizer, cache_key

    if d.tokenizer is not None and not Path(d.tokenizer).is_file():
        return False
    key = cache_key(d, Tokenizer(d.tokenizer))
    return (Path(d.cache_dir) / "tokens" / key / "meta.json").exists()


def empty_root_problems(root: str) -> list[str]:
    """An empty `storage_root` (the current folder itself, the run folders strewn in it):
    checked without touching the disk, so `python -m trainer --cfg` says it too."""
    return [] if root.strip() else [
        "storage_root is empty: give the folder for the run directories, e.g. storage_root=runs"]


def _storage_problems(root: str) -> list[str]:
    """A run on this machine writes under `storage_root`: a file in its path, or a folder that
    cannot be made or written, is said before anything runs (it was a traceback after the
    data was read). Made now if missing, as the run would."""
    from trainer.paths import folder_problem

    if empty := empty_root_problems(root):
        return empty
    reason = folder_problem(root)
    return [f"storage_root={root}: {reason}; give a folder you can write the run directories "
            "to"] if reason else []


def notes(cfg: Config) -> list[str]:
    """What a valid config does that its author may not expect, one sentence each (printed,
    never refused: configs like these were valid, and their trials must stay resumable)."""
    t, found = cfg.train, []
    batch_tokens = t.batch_size * t.seq_len
    if t.batch_schedule is not BatchSchedule.norm_test and 0 < batch_tokens <= t.tokens \
            and t.tokens % batch_tokens > DROPPED_FRACTION * t.tokens:
        # The schedule runs to train.tokens and the loop stops at the last whole batch. (Under
        # one batch the run cannot start: a problem says so, and "0 would not" helped no one.)
        below = t.tokens // batch_tokens * batch_tokens
        found.append(f"train.tokens={t.tokens} is not a whole number of batches "
                     f"({batch_tokens} tokens): the run stops {t.tokens - below:,} tokens "
                     f"short of it, before its schedule ends; {below + batch_tokens} or "
                     f"{below} would not")
    s = cfg.schedule
    if s.name in (ScheduleName.power, ScheduleName.wsd) and s.warmup_tokens is not None \
            and t.tokens > 0 and 0 <= s.decay_fraction <= 1 \
            and s.warmup_tokens > (1 - s.decay_fraction) * t.tokens:  # (else a problem)
        start = int((1 - s.decay_fraction) * t.tokens)
        fix = (f"set schedule.warmup_tokens below {start} (e.g. {min(t.tokens // 10, start // 2)})"
               " to reach it" if start > 1 else "lower schedule.decay_fraction to leave a "
               "stable phase")
        found.append(f"schedule.warmup_tokens={s.warmup_tokens} reaches into the decay, which "
                     f"starts at {start:,} tokens: the run never trains at its peak LR; {fix}")
    if s.name in (ScheduleName.power, ScheduleName.wsd) and 0 < s.decay_fraction <= 1 \
            and t.batch_schedule is not BatchSchedule.norm_test and batch_tokens > 0 \
            and (steps := t.tokens // batch_tokens) > 0 \
            and (decaying := _steps_in_decay(s.decay_fraction, t.tokens, batch_tokens)) < 2:
        # (each step reads the LR at its batch's middle: a decay shorter than half a batch at
        # the end of the budget holds no step, and the run ended at its peak LR unsaid)
        need = next(n * batch_tokens for n in itertools.count(steps + 1)
                    if _steps_in_decay(s.decay_fraction, n * batch_tokens, batch_tokens) >= 2)
        what = ("no step trains in the decay: the run ends at its peak LR" if decaying == 0
                else "one step trains in the decay: it is one lower LR, not a curve")
        found.append(f"schedule.decay_fraction={s.decay_fraction:g} of train.tokens="
                     f"{t.tokens:,} is a decay of {int(s.decay_fraction * t.tokens):,} tokens, "
                     f"and a run of {steps} steps of {batch_tokens:,} tokens takes the LR at "
                     f"each batch's middle: {what}; train.tokens={need:,} (whole batches) or a "
                     "larger schedule.decay_fraction gives it two steps")
    if s.name in (ScheduleName.cosine, ScheduleName.linear) and t.tokens > 0 \
            and s.warmup_tokens > 0.05 * t.tokens and (peak := _peak_fraction(cfg)) < PEAK_NOTED:
        # (a warmup under 5% of the budget peaks above 0.95: not computed for every trial)
        found.append(f"schedule.warmup_tokens={s.warmup_tokens:,} of train.tokens="
                     f"{t.tokens:,}: the {s.name.value} decay spans the whole budget, under the "
                     f"warmup too, so the LR peaks at {peak:.2f} × optim.lr; a warmup of "
                     f"{t.tokens // 10:,} (a tenth) reaches "
                     f"{_peak_fraction(cfg, t.tokens // 10):.2f}")
    if cfg.data.source is not DataSource.hf and cfg.data.split != "train":
        found.append(f"data.split={cfg.data.split} is not read by data={cfg.data.source.value} "
                     "(only data=hf has named splits): the run trains on its data as with "
                     "data.split=train, under another id")
    uri = cfg.tracking.uri or ""
    if uri.startswith("sqlite:///"):  # (a typo made /nonexistent/dir/x.db without a word)
        folder = Path(uri.removeprefix("sqlite:///").split("?")[0]).expanduser().resolve().parent
        if not folder.exists():
            found.append(f"tracking.uri: the folder {folder} does not exist, and the store is "
                         "created there with it; check the path if that is not meant")
    return found


def _steps_in_decay(decay_fraction: float, tokens: int, batch_tokens: int) -> int:
    """Steps of a constant-batch run whose LR is read inside the final decay (those whose
    batch's middle lies past the decay's start), counted among its last three: enough to tell
    a decay of fewer than two."""
    start = tokens * (1.0 - decay_fraction)
    return sum((k + 0.5) * batch_tokens > start for k in range(
        max(tokens // batch_tokens - 3, 0), tokens // batch_tokens))


def unread(cfg: Config) -> dict[str, str]:
    """Keys this config sets but never reads (its schedule, parametrization or data source
    has no use for them), each with why. They still enter its id: a grid axis over one trains
    the same model once per value."""
    s, out = cfg.schedule, {}
    decays = s.name in (ScheduleName.power, ScheduleName.wsd)
    for key in ("decay_fraction", "decay_shape"):
        if not decays:
            out[f"schedule.{key}"] = (f"schedule={s.name.value} has no final decay phase "
                                      "(only power and wsd do)")
    if s.name is not ScheduleName.power:
        for key in ("a", "b"):
            out[f"schedule.{key}"] = (f"schedule={s.name.value} does not read it (only "
                                      "power does)")
    if not decays or s.decay_shape != "exp":
        out["schedule.exp_final_ratio"] = ("only the exp decay shape of power and wsd reads "
                                           "it")
    if s.name is ScheduleName.constant or (decays and s.decay_shape == "exp"):
        out["schedule.min_lr_ratio"] = (f"schedule={s.name.value}"
                                        + (" with decay_shape exp" if decays else "")
                                        + " does not read it")
    if decays and s.decay_fraction <= 0:  # (power and wsd without their final decay)
        for key in ("decay_shape", "min_lr_ratio", "exp_final_ratio"):
            out[f"schedule.{key}"] = (f"schedule.decay_fraction={s.decay_fraction:g} leaves "
                                      f"schedule={s.name.value} no final decay to shape")
    if cfg.model.param is Param.sp:
        out["model.base_width"] = "model.param=sp does not read it (only mup does)"
    if cfg.train.batch_schedule is not BatchSchedule.norm_test:
        for key in ("norm_test_eta", "norm_test_every", "max_batch_size"):
            out[f"train.{key}"] = (f"train.batch_schedule={cfg.train.batch_schedule.value} "
                                   "does not read it (only norm_test does)")
    if cfg.data.source is DataSource.synthetic and cfg.data.tokenizer:
        out["data.tokenizer"] = "data=synthetic does not read it (its symbols are its tokens)"
    if cfg.data.source is not DataSource.hf:
        for key in ("name", "config_name", "revision", "streaming", "split"):
            out[f"data.{key}"] = (f"data={cfg.data.source.value} does not read it (only "
                                  "data=hf does)")
    synthetic = ("vocab_size", "order", "concentration", "num_tokens", "chain_seed")
    if cfg.data.source is not DataSource.synthetic:
        for key in synthetic:
            out[f"data.{key}"] = (f"data={cfg.data.source.value} does not read it (only "
                                  "data=synthetic does)")
    else:
        for key in ("text_field", "max_tokens", "holdout_fraction", "val_split"):
            out[f"data.{key}"] = ("data=synthetic does not read it (it generates its tokens "
                                  "and its eval split)")
    if cfg.data.source is DataSource.pystdlib:
        out["data.text_field"] = "data=pystdlib does not read it (each file is one document)"
    files = [*cfg.data.paths, *cfg.data.val_paths]
    text_files = files and all(Path(p).suffix.lower() == ".txt" for p in files)
    if cfg.data.source is DataSource.files and text_files:
        out["data.text_field"] = ".txt files do not have fields (each file is one document)"
    if cfg.data.source is DataSource.files and cfg.data.val_paths and not cfg.data.max_tokens:
        out["data.holdout_fraction"] = ("data.val_paths is the eval split (holdout_fraction "
                                        "only caps it, with data.max_tokens)")
    return out
