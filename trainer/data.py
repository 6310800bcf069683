"""Token data: sources read through `datasets`, tokenized once into a memory-mapped cache.

Sources give documents (pystdlib, hf, files) or tokens (synthetic). Documents are tokenized
(bytes, or a `tokenizers` JSON file) and written once to `CACHE/tokens/<key>/{train,val}.bin`,
where the key hashes the content (file bytes, or the hub dataset's identity) and the tokenizer.
A cache is written into a temporary directory and renamed, so a crash never leaves half of one.

Order: the training split is cut into sequences of seq_len + 1 tokens starting every seq_len
tokens; a permutation of them, fixed by the seed (a new one per epoch), is the run's stream.
A batch is the next B sequences of that stream, so the stream does not depend on the batch size
and a checkpoint needs only the number of sequences consumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.config import DataConfig, DataSource
from trainer.errors import ConfigError, DataUnavailable
from trainer.fingerprint import data_fingerprint, hash_file, stdlib_files
from trainer.lease import pid_alive
from trainer.synthetic import MarkovChain
from trainer.text import (
    Tokenizer,
    _first_line,
    _no_field,
    first_unreadable,
    not_utf8,
    said_files,
)

CACHE_VERSION = "1"
"""(The key of `data=files` holds each file's suffix and length since a .txt copy of a .jsonl
file, and two files joined into one, hashed to the key of the other's tokens: those keys
moved, the others, hub datasets' included, did not.)"""


@dataclass(frozen=True)
class TokenData:
    """Memory-mapped train and val token arrays and the vocabulary size."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    loss_floor: float | None = None
    """Entropy rate in nats when the source knows it (synthetic)."""


def is_heldout(name: str, fraction: float) -> bool:
    """A document is held out when a hash of its name falls below `fraction`."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_tokens(cfg: DataConfig) -> TokenData:
    """Tokens of the configured source, from the cache or tokenized into it now."""
    if cfg.source is DataSource.synthetic:
        return _synthetic_tokens(cfg)
    check_fingerprint(cfg)
    tokenizer = Tokenizer(cfg.tokenizer)
    key = cache_key(cfg, tokenizer)
    directory = Path(cfg.cache_dir) / "tokens" / key
    if (directory / "meta.json").exists() and _damaged(directory):
        _set_aside(directory)
    if not (directory / "meta.json").exists():
        _write_cache(directory, _documents(cfg), tokenizer, cfg)
    meta = json.loads((directory / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return TokenData(train=np.memmap(directory / "train.bin", dtype=dtype, mode="r"),
                     val=np.memmap(directory / "val.bin", dtype=dtype, mode="r"),
                     vocab_size=meta["vocab_size"])


def _damaged(directory: Path) -> bool:
    """Whether a cache's token files are not the sizes its meta.json says (cut short by a full
    disk or a copy, emptied): it trained on fewer tokens under the same id, or raised."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        size = np.dtype(meta["dtype"]).itemsize
        return any((directory / f"{split}.bin").stat().st_size != meta[split] * size
                   for split in ("train", "val"))
    except (OSError, ValueError, KeyError, TypeError):
        return True


def _set_aside(directory: Path) -> None:
    """Move a damaged cache out of the way (runs that have it open keep reading it) and say
    so; the caller writes it again."""
    import sys

    aside = directory.with_name(f".damaged-{directory.name}-{os.getpid()}")
    try:
        os.replace(directory, aside)
    except OSError:
        return  # (another process set it aside, or rewrote it, first)
    print(f"note: data: the token cache {directory} did not match its meta.json (cut short "
          f"or emptied); set aside as {aside.name} and tokenized again", file=sys.stderr)


def check_fingerprint(cfg: DataConfig) -> None:
    """Refuse a config whose `data.fingerprint` is not that of the data this machine reads: its
    trial id stands for other tokens (another Python's standard library, changed files)."""
    if cfg.fingerprint is None:
        return
    here = data_fingerprint(cfg)
    if here != cfg.fingerprint and cfg.source is DataSource.files:
        # (a sweep's files edited while it ran: "compose it again" was no fix a user could do)
        raise ConfigError(
            f"data.fingerprint={cfg.fingerprint[:12]} is not the data this machine reads: the "
            f"files under data.paths (or data.val_paths, data.tokenizer) hash to "
            f"{here[:12] if here else here} "
            "here, changed since the trial was composed (or other files at those paths): put "
            "them back and run it again (`sweep resume`), or launch the sweep's spec again to "
            "train on them under new trial ids")
    if here != cfg.fingerprint:
        raise ConfigError(
            f"data.fingerprint={cfg.fingerprint} is not the data this machine reads "
            f"(data.source={cfg.source.value} here hashes to {here}): run the trial where its "
            "data is (same Python for pystdlib, same files), or compose it again here for a "
            "new trial id")


def cache_key(cfg: DataConfig, tokenizer: Tokenizer) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}|{cfg.source.value}|{tokenizer.fingerprint}|".encode())
    h.update(f"{cfg.holdout_fraction}|{cfg.max_tokens}|{cfg.text_field}|".encode())
    if cfg.source is DataSource.pystdlib:
        for path in stdlib_files():
            h.update(path.name.encode())
            hash_file(h, path)
    elif cfg.source is DataSource.files:
        for path in cfg.paths:  # (the suffix picks the parser; the length, the boundaries)
            h.update(f"{Path(path).suffix.lower()}|{Path(path).stat().st_size}|".encode())
            hash_file(h, Path(path))
        for path in cfg.val_paths:  # (a key without them is the key it was before them)
            h.update(f"val|{Path(path).suffix.lower()}|{Path(path).stat().st_size}|".encode())
            hash_file(h, Path(path))
    else:
        h.update(f"{cfg.name}|{cfg.config_name}|{cfg.split}|{cfg.val_split}".encode())
        if cfg.revision is not None:
            h.update(f"|{cfg.revision}".encode())
    return h.hexdigest()[:32]


def _documents(cfg: DataConfig) -> Iterator[tuple[str, str, bool]]:
    """(name, text, held out) for every document, in a fixed order."""
    if cfg.source is DataSource.pystdlib:
        yield from _stdlib_documents(cfg)
    else:
        yield from _datasets_documents(cfg)


def _stdlib_documents(cfg: DataConfig) -> Iterator[tuple[str, str, bool]]:
    import datasets

    datasets.disable_progress_bars()
    root = Path(sysconfig.get_paths()["stdlib"])
    files = {"train": [], "validation": []}
    for path in stdlib_files():
        held = is_heldout(str(path.relative_to(root)), cfg.holdout_fraction)
        files["validation" if held else "train"].append(str(path))
    # One document per file, read by the same `datasets` builder as `data=files` text files;
    # a few test files are deliberately not UTF-8, hence the replacement of bad bytes.
    # Streamed: read file by file, no Arrow copy under ~/.cache/huggingface
    ds = datasets.load_dataset("text", data_files=files, sample_by="document",
                               encoding_errors="replace", streaming=True)
    for split, held in (("train", False), ("validation", True)):
        for i, row in enumerate(ds[split]):
            yield f"{split}/{i}", row["text"], held


def open_dataset(cfg: DataConfig, split: str, paths: Sequence[str] | None = None
                 ) -> Iterable[dict]:
    """The `datasets` dataset for a hub name (`hf`) or local files (`files`: `split` is
    `cfg.split` for `data.paths`, `VAL_FILES` for `data.val_paths`; `paths`: those of them
    to read, default all)."""
    import datasets

    datasets.disable_progress_bars()
    if cfg.source is DataSource.hf:
        return datasets.load_dataset(cfg.name, cfg.config_name, split=split,
                                     streaming=cfg.streaming, revision=cfg.revision)
    _quiet_file_readers()
    # Streamed, row by row: the files are read once, into the token cache, without holding
    # them in memory or leaving an Arrow copy of each version under ~/.cache/huggingface.
    if paths is None:
        paths = list(cfg.val_paths if split == VAL_FILES else cfg.paths)
    suffix = Path(paths[0]).suffix.lower()
    builder = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}[suffix]
    if builder != "text":
        return datasets.load_dataset(builder, data_files=paths, split="train", streaming=True)
    # (strict UTF-8: text in another encoding is refused, not trained as U+FFFD bytes)
    ds = datasets.load_dataset("text", data_files=paths, split="train",
                               sample_by="document", streaming=True)
    # A .txt file is one document under the builder's `text` column, whatever text_field says.
    return ds if cfg.text_field == "text" else ds.rename_column("text", cfg.text_field)


FILE_READER_LOGGERS = ("datasets.packaged_modules.json.json",
                       "datasets.packaged_modules.parquet.parquet")
"""The `datasets` readers of local .jsonl/.json and .parquet files. Each logs an error ("Failed
to load JSON from file '...' with error <class 'pyarrow.lib.ArrowInvalid'>: ...") just before it
raises, and `_rows` turns what it raises into one sentence: that log line came first."""


def _quiet_file_readers() -> None:
    import logging

    for name in FILE_READER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


VAL_FILES = "data.val_paths"
"""The split name under which `open_dataset` reads the files of `data.val_paths`."""


def _rows(cfg: DataConfig, split: str) -> Iterator[tuple[int, str]]:
    """(row number, text) of a split, with what a user can get wrong said in one sentence: a
    file that is not what its suffix says, a text field the rows do not have or that holds no
    text, a hub dataset that cannot be loaded."""
    files = cfg.val_paths if split == VAL_FILES else cfg.paths
    where = (said_files("data.val_paths" if split == VAL_FILES else "data.paths", files)
             if cfg.source is DataSource.files else f"data.name={cfg.name}")
    # Tables (.jsonl, .json, .parquet) are read in runs of files whose columns agree (their
    # first row's): read all together, `datasets` cast every file to the first one's columns,
    # so a second file with one more column was "cannot be read (CastError)", and its numbers
    # given as text were trained as text. (One file at a time cost 0.2 s a file.)
    tables = cfg.source is DataSource.files and Path(files[0]).suffix.lower() != ".txt"
    groups = _alike(files) if tables else [None]
    i, reading = 0, where
    try:
        for paths in groups:
            reading = paths[0] if paths and len(paths) == 1 else where
            for row in open_dataset(cfg, split, paths):
                if (problem := _row_problem(cfg.text_field, row)) is not None:
                    raise ConfigError(_row_said(cfg, split, paths, where, i, problem, row))
                yield i, row[cfg.text_field]
                i += 1
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 (datasets, pyarrow and the hub raise many kinds)
        if cfg.source is DataSource.files:
            if located := first_unreadable(files, where):
                raise ConfigError(located) from None
            cause = err.__cause__ or err.__context__ or err  # (datasets wraps the parser's)
            if isinstance(cause, UnicodeDecodeError) or isinstance(err, UnicodeDecodeError):
                raise ConfigError(not_utf8(where, cause if isinstance(
                    cause, UnicodeDecodeError) else err)) from None
            place = where if reading == where else (
                f"{'data.val_paths' if split == VAL_FILES else 'data.paths'}: {reading}")
            raise ConfigError(f"{place} cannot be read ({_first_line(cause)}): check that "
                              "each file holds what its suffix says (.txt text, .jsonl one "
                              "JSON object a line, .parquet a table)") from None
        if (missing := missing_split(cfg, split, err)) is not None:
            raise ConfigError(missing) from None
        raise DataUnavailable(f"{where} could not be loaded from the Hugging Face hub "
                              f"({_first_line(err)}): check the name, split and network, or "
                              "save the data locally and use data=files") from None


def _alike(files: Sequence[str]) -> list[list[str]]:
    """The files in order, in runs whose first rows have the same columns of the same types
    (`_columns`): each run is one read. A file whose first row cannot be told is read alone."""
    runs: list[list[str]] = []
    last = None
    for path in files:
        columns = _columns(path)
        if columns is not None and columns == last:
            runs[-1].append(path)
        else:
            runs.append([path])
        last = columns
    return runs


def _columns(path: str) -> tuple | None:
    """A table file's columns and their types, from its first row (a .jsonl) or its schema (a
    .parquet); None for others, or where the file cannot be read (its own read says why)."""
    import json

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return ("parquet", str(pq.read_schema(path)))
        if suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                first = next((line for line in f if line.strip()), "")
            row = json.loads(first)
            return ("jsonl", *sorted((k, type(v).__name__) for k, v in row.items())) \
                if isinstance(row, dict) else None
    except (OSError, ValueError, ImportError):
        return None
    return None


def _row_problem(field: str, row: dict) -> str | None:
    """What is wrong with one row's text: "missing" (no such field), "none", or "holds a T"."""
    if field not in row:
        return "missing"
    text = row[field]
    if text is None:  # (a row without the field, in a file whose other rows have it)
        return "none"
    if not isinstance(text, str):
        kind = type(text).__name__
        return f"holds {'an' if kind[0] in 'aeiou' else 'a'} {kind} there, not text"
    return None


def _row_said(cfg: DataConfig, split: str, paths: list[str] | None, where: str, i: int,
              problem: str, row: dict) -> str:
    """One sentence for a row `_row_problem` refuses, naming its file and line (found by
    reading the files of its read one at a time: a rare path), else its row."""
    place, first = f"row {i + 1} of {where}", i == 0
    if paths:
        for path in paths:
            for k, candidate in enumerate(open_dataset(cfg, split, [path])):
                if _row_problem(cfg.text_field, candidate) is not None:
                    place, row = _line_of(path, k), candidate
                    first = first and path == paths[0] and k == 0
                    break
            else:
                continue
            break
    f = cfg.text_field
    if problem == "missing" and first:
        return _no_field(f, paths[0] if paths and len(paths) == 1 else where, row)
    if problem == "missing":  # (earlier rows have it: the advice to rename it was wrong)
        return (f"data.text_field={f}: {place} has no field {f} (it has "
                f"{', '.join(map(str, row))}) while the rows before it do: give it one, or "
                "leave its file out")
    if problem == "none":
        return (f"data.text_field={f}: {place} has none (null or missing): give every row "
                "its text, or drop the rows without it")
    return f"data.text_field={f}: {place} {problem}: give rows whose {f} is a string"


def _line_of(path: str, k: int) -> str:
    """"line N of PATH" for a .jsonl file's row k (0-based; the reader skips blank lines),
    "row k+1 of PATH" for other tables."""
    if not path.lower().endswith(".jsonl"):
        return f"row {k + 1} of {path}"
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            seen += bool(line.strip())
            if seen == k:
                return f"line {number} of {path}"
    return f"row {k + 1} of {path}"


SPLIT_ERROR = re.compile(r'(?:Bad split: (?P<bad>.+?)\. Available splits: |'
                         r'Unknown split "(?P<unknown>.+?)"\. Should be one of )(?P<have>\[.*\])')
"""What `datasets` says of a split a dataset does not have (datasets 2 to 5)."""


def missing_split(cfg: DataConfig, split: str, err: BaseException) -> str | None:
    """One sentence for a split the dataset does not have, naming the key that asked for it
    and the splits there are; None when `err` is not that (a network failure, say)."""
    found = SPLIT_ERROR.search(str(err))
    if found is None:
        return None
    key = "data.val_split" if split == cfg.val_split and split != cfg.split else "data.split"
    have = re.findall(r"'([^']*)'", found["have"])
    lacking = [name for name in split_names(split) if name not in have]
    if not lacking:  # every split is there: a slice, which a streamed dataset cannot take
        return (f"{key}={split}: a streamed dataset cannot be sliced; set data.streaming=false "
                "(it downloads the dataset) or give the whole split")
    return (f"{key}={split}: data.name={cfg.name} has no split {lacking[0]} (its splits: "
            f"{', '.join(have)}); give one of them")


def split_names(split: str) -> list[str]:
    """The splits a `datasets` split expression reads ("train[:10%]+validation": train,
    validation)."""
    return [part.split("[")[0].strip() for part in split.split("+")]


def _datasets_documents(cfg: DataConfig) -> Iterator[tuple[str, str, bool]]:
    if cfg.val_paths and cfg.source is DataSource.files:
        # (the eval files opened first, as a val_split is: for what is wrong with them)
        for _ in zip(range(1), _rows(cfg, VAL_FILES), strict=False):
            pass
        for i, text in _rows(cfg, cfg.split):
            yield f"train/{i}", text, False
        for i, text in _rows(cfg, VAL_FILES):
            yield f"val/{i}", text, True
        return
    if cfg.val_split is not None and cfg.source is DataSource.hf:  # (files have no splits)
        # The eval split is opened (one row) before the training split is read: a val_split
        # the dataset lacks was said only after the whole training split had streamed.
        for _ in zip(range(1), _rows(cfg, cfg.val_split), strict=False):
            pass
        for i, text in _rows(cfg, cfg.split):
            yield f"{cfg.split}/{i}", text, False
        for i, text in _rows(cfg, cfg.val_split):
            yield f"{cfg.val_split}/{i}", text, True
        return
    # Files have no splits (`data.split` is not read): their documents are named as under the
    # default, whatever it is set to, which is what their token cache's key assumes (a
    # `data.split=test` held out other documents, and whichever run filled the cache first
    # decided what both trained on).
    prefix = cfg.split if cfg.source is DataSource.hf else "train"
    for i, text in _rows(cfg, cfg.split):
        name = f"{prefix}/{i}"
        yield name, text, is_heldout(name, cfg.holdout_fraction)


def _write_cache(directory: Path, documents: Iterable[tuple[str, str, bool]],
                 tokenizer: Tokenizer, cfg: DataConfig, chunk: int = 256) -> None:
    from trainer.validation import CACHE_FIX

    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers(directory.parent)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent,
                                    prefix=f".tmp-{os.getpid()}@{socket.gethostname()}-"))
        # (mkdtemp makes it 0700: a team's shared cache would be unreadable to the others)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as err:
        raise ConfigError(f"data.cache_dir={cfg.cache_dir}: cannot write the token cache there "
                          f"({err.strerror or err}); {CACHE_FIX}") from None
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    try:
        counts = _tokenize_into(tmp, documents, tokenizer, cfg, dtype=dtype, chunk=chunk)
        if counts["val"] + counts["train"] == 0:
            where = said_files("data.paths", cfg.paths) if cfg.paths else f"data.name={cfg.name}"
            raise ConfigError(f"{where} holds no text: give files or a dataset with text")
        if cfg.val_paths and (counts["val"] == 0 or counts["train"] == 0):
            key = "data.val_paths" if counts["val"] == 0 else "data.paths"
            raise ConfigError(f"{key}={list(cfg.val_paths if counts['val'] == 0 else cfg.paths)}"
                              " holds no text: give files with text")
        if (counts["val"] == 0 or counts["train"] == 0) and cfg.val_split is None:
            counts = _hold_out_the_tail(tmp, cfg.holdout_fraction, dtype)
        if counts["val"] == 0 or counts["train"] == 0:
            other = "data.val_paths" if cfg.source is DataSource.files else "data.val_split"
            raise ConfigError("data.holdout_fraction left no documents in one split: raise "
                              f"data.holdout_fraction or give {other}")
        meta = {"dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size, **counts}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, directory)
        except OSError:
            if not (directory / "meta.json").exists():
                raise  # not a concurrent writer of the same cache: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_WRITER = re.compile(r"^\.tmp-(\d+)@(.+)-[^-]+$")


def _remove_dead_writers(folder: Path) -> None:
    """Remove the half-written caches of writers on this host that died (a kill during
    tokenization left one behind each time: hundreds of MB for a large dataset). A writer
    on another host, or one still alive, keeps its own."""
    host = socket.gethostname()
    for path in folder.glob(".tmp-*"):
        found = _WRITER.match(path.name)
        if found and found.group(2) == host and not pid_alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _tokenize_into(tmp: Path, documents: Iterable[tuple[str, str, bool]], tokenizer: Tokenizer,
                   cfg: DataConfig, *, dtype: type, chunk: int) -> dict[str, int]:
    counts = {"train": 0, "val": 0}
    limit = {"train": cfg.max_tokens, "val": int(cfg.max_tokens * cfg.holdout_fraction)}
    with open(tmp / "train.bin", "wb") as train, open(tmp / "val.bin", "wb") as val:
        for batch in _chunks(documents, chunk):
            encoded = tokenizer.encode_checked([text for _, text, _ in batch])
            for (_, _, held), ids in zip(batch, encoded, strict=True):
                split = "val" if held else "train"
                if cfg.max_tokens and counts[split] >= max(limit[split], 1):
                    continue
                (val if held else train).write(ids.astype(dtype).tobytes())
                counts[split] += len(ids)
            if cfg.max_tokens and all(counts[k] >= max(limit[k], 1) for k in counts):
                break
    if cfg.max_tokens and counts["train"] > 1.5 * cfg.max_tokens:
        # The cap is checked between documents, as caches (and trial ids) have always had it:
        # cutting documents now would change the tokens of trials already trained.
        import sys

        print(f"note: data.max_tokens={cfg.max_tokens:,} is checked between documents, and "
              f"the last one read took the training split to {counts['train']:,} tokens (a "
              ".txt file is one document: split it into several files to cap it)",
              file=sys.stderr)
    return counts


def _hold_out_the_tail(tmp: Path, fraction: float, dtype: type) -> dict[str, int]:
    """Too few documents for both splits (a single .txt file is one document): the last
    `fraction` of the tokens is held out instead, the rest trains. Deterministic, and only
    where holding out by document could not work."""
    import sys

    tokens = np.concatenate([np.fromfile(tmp / "train.bin", dtype=dtype),
                             np.fromfile(tmp / "val.bin", dtype=dtype)])
    cut = len(tokens) - max(int(len(tokens) * fraction), 1)
    tokens[:cut].tofile(tmp / "train.bin")
    tokens[cut:].tofile(tmp / "val.bin")
    print(f"note: data: every document fell into one split (too few to hold out "
          f"{fraction:g} of them); the last {len(tokens) - cut:,} of {len(tokens):,} tokens "
          "are held out instead", file=sys.stderr)
    return {"train": cut, "val": len(tokens) - cut}


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _synthetic_tokens(cfg: DataConfig) -> TokenData:
    chain = MarkovChain.random(vocab_size=cfg.vocab_size, order=cfg.order,
                               concentration=cfg.concentration, seed=cfg.chain_seed)
    train = chain.sample(cfg.num_tokens, seed=cfg.chain_seed + 1)
    val = chain.sample(max(cfg.num_tokens // 10, 4096), seed=cfg.chain_seed + 2)
    return TokenData(train=train, val=val, vocab_size=cfg.vocab_size,
                     loss_floor=chain.entropy_rate())


class TokenStream:
    """The seeded sequence stream of a split; `batch(position, n)` is pure in its arguments."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.num_sequences = (len(tokens) - 1) // seq_len
        if self.num_sequences < 1:
            raise ConfigError(f"train.seq_len={seq_len} is longer than the data "
                              f"({len(tokens)} tokens): lower train.seq_len or add data")
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._order = epoch, rng.permutation(self.num_sequences)
        return self._order

    def sequence_starts(self, position: int, count: int) -> np.ndarray:
        """Token offsets of stream sequences [position, position + count)."""
        starts = np.empty(count, dtype=np.int64)
        for i in range(count):
            epoch, index = divmod(position + i, self.num_sequences)
            starts[i] = self._permutation(epoch)[index] * self.seq_len
        return starts

    def batch(self, position: int, count: int) -> torch.Tensor:
        """Sequences [position, position + count) of the stream as (count, seq_len + 1) ids."""
        starts = self.sequence_starts(position, count)
        rows = [self.tokens[s:s + self.seq_len + 1] for s in starts]
        return torch.from_numpy(np.stack(rows).astype(np.int64))


def eval_batches(tokens: np.ndarray, *, seq_len: int, num_tokens: int,
                 batch_size: int) -> list[torch.Tensor]:
    """The fixed held-out set: the first `num_tokens` of the val split, in order, same for
    every seed so that runs compare on the same tokens."""
    num_seq = max(1, min(num_tokens // seq_len, (len(tokens) - 1) // seq_len))
    rows = np.stack([tokens[i * seq_len:i * seq_len + seq_len + 1] for i in range(num_seq)])
    ids = torch.from_numpy(rows.astype(np.int64))
    return list(ids.split(batch_size))
