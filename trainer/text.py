"""Text sources without torch: the tokenizer, and what a little of the data tells.

A sweep's driver validates every trial (`trainer.validation`) and must not import torch for it
(seconds, and memory, per driver): what it reads of the data lives here, and `trainer.data`,
which turns text into token tensors, builds on it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from stat import S_ISREG

import numpy as np

from trainer.config import DataConfig, DataSource
from trainer.errors import ConfigError


class Tokenizer:
    """Bytes by default (vocab 256), or a `tokenizers` JSON file."""

    def __init__(self, path: str | None):
        self.path = path
        self._tok = None
        if path is not None:
            from tokenizers import Tokenizer as HFTokenizer
            try:
                self._tok = HFTokenizer.from_file(path)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:  # noqa: BLE001 (a bare Exception for a bad file, or
                # a PanicException of its Rust core, which is no Exception)
                raise ConfigError(f"data.tokenizer={path} is not a tokenizers JSON file "
                                  f"({_first_line(err)}): give one saved by "
                                  "Tokenizer.save, or leave it unset for bytes") from None
            if self._tok.get_vocab_size(with_added_tokens=True) == 0:
                raise ConfigError(f"data.tokenizer={path} has an empty vocabulary (an "
                                  "untrained tokenizer): train it before saving it, or leave "
                                  "data.tokenizer unset for bytes")

    @property
    def vocab_size(self) -> int:
        """One more than the largest token id: a vocabulary whose ids have gaps (a WordLevel
        file edited by hand) has ids at or past its entry count, which the embedding must
        hold."""
        if self._tok is None:
            return 256
        ids = self._tok.get_vocab(with_added_tokens=True).values()
        return max(self._tok.get_vocab_size(), max(ids, default=-1) + 1)

    @property
    def fingerprint(self) -> str:
        if self.path is None:
            return "bytes"
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()

    def encode_checked(self, texts: list[str]) -> list[np.ndarray]:
        """`encode`, with a tokenizer that cannot encode the text (a WordLevel vocabulary
        without an unknown token) said in one sentence naming data.tokenizer."""
        try:
            return self.encode(texts)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as err:  # noqa: BLE001 (its Rust core raises bare Exceptions)
            if self._tok is None:
                raise
            raise ConfigError(f"data.tokenizer={self.path} cannot encode the data "
                              f"({_first_line(err)}): give a tokenizer that covers the text "
                              "(one with an unknown token), or leave it unset for "
                              "bytes") from None

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text."""
        if self._tok is None:
            return [np.frombuffer(t.encode("utf-8", "replace"), dtype=np.uint8) for t in texts]
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts)]


def content_problems(cfg: DataConfig) -> list[str]:
    """What can be told of the data without reading it all, in the sentences the run would
    raise: a tokenizer file that is not one, a text file whose first MiB is not UTF-8, a
    JSON-lines or parquet file whose rows lack `data.text_field`. Cheap (the tokenizer parsed,
    a MiB, one line or a parquet schema read; each file once per process while it is
    unchanged), so a sweep refuses them before its trials
    start rather than failing every trial on the same sentence. Without torch: a sweep's
    driver validates its trials with it."""
    def stat(path):
        try:
            st = os.stat(path)
        except OSError:
            return None  # (a missing file is said by validation: the others still are read)
        return st if S_ISREG(st.st_mode) else None  # (a folder too)

    listed = ([("data.paths", p) for p in cfg.paths] + [("data.val_paths", p) for p in
                                                         cfg.val_paths]
              if cfg.source is DataSource.files else [])
    files = {p: stat(p) for p in (*(p for _, p in listed), cfg.tokenizer) if p is not None}
    stats = tuple((st.st_size, st.st_mtime_ns) for st in files.values() if st is not None)
    keyed = tuple((key, p) for key, p in listed if files.get(p))
    tokenizer = cfg.tokenizer if cfg.tokenizer is not None and files.get(cfg.tokenizer) \
        else None
    return list(_content_problems(keyed, tokenizer, cfg.text_field, stats))


@functools.lru_cache(maxsize=64)
def _content_problems(keyed: tuple[tuple[str, str], ...], tokenizer: str | None,
                      text_field: str, stats: tuple) -> tuple[str, ...]:
    # (once per data config and file versions: a sweep asks once per trial; `keyed`: each
    # file with the key that lists it)
    found = []
    if tokenizer is not None:
        found += _tokenizer_problem(tokenizer)
    for key, path in keyed:
        found += _utf8_problem(path, f"{key}={[path]}")
    for key, path in keyed:
        fields = _fields_of(path)
        if fields and text_field not in fields:
            found.append(_no_field(text_field, f"{key}={[path]}", fields))
            break
    return tuple(found)


def said_files(key: str, paths) -> str:
    """`key=[...]` for a sentence: the files, or where a folder or pattern gave many, the
    first and how many."""
    paths = list(paths)
    if len(paths) <= 3:
        return f"{key}={paths}"
    return f"{key}=[{paths[0]!r}, ... ({len(paths)} files)]"


def _no_field(field_name: str, where: str, fields) -> str:
    return (f"data.text_field={field_name}: the rows of {where} have no such field (they have "
            f"{', '.join(map(str, fields))}): set data.text_field to the one holding the text")


def _tokenizer_problem(path: str) -> list[str]:
    try:
        Tokenizer(path)
    except ConfigError as err:
        return list(err.problems)
    return []


def _fields_of(path: str) -> tuple[str, ...]:
    """Field names of the first row of a .jsonl, .json (JSON lines or an array of rows, its
    first row within the first MiB) or .parquet file; () where that cannot be told cheaply (a
    .txt file is text; a broken file is said by the run, where the parser names what is
    wrong)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(path, encoding="utf-8", errors="replace") as f:
                first = next((line for line in f if line.strip()), "")
            row = json.loads(first) if first else None
            return tuple(row) if isinstance(row, dict) else ()
        if suffix == ".json":  # JSON lines, or one array of rows: its first row
            with open(path, encoding="utf-8", errors="replace") as f:
                head = f.read(1 << 20).lstrip()
            head = head[1:].lstrip() if head.startswith("[") else head
            row = json.JSONDecoder().raw_decode(head)[0] if head.startswith("{") else None
            return tuple(row) if isinstance(row, dict) else ()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return tuple(pq.read_schema(path).names)
    except (OSError, ValueError, ImportError):
        return ()
    except Exception:  # noqa: BLE001 (pyarrow's errors for a file that is not parquet)
        return ()
    return ()


def not_utf8(where: str, err: UnicodeDecodeError, path: str | None = None,
             offset: int = 0) -> str:
    """The sentence for text that is not UTF-8 (it was trained as U+FFFD replacement bytes);
    `offset`: of `err.object` in the file."""
    byte = f"byte 0x{err.object[err.start]:02x}"
    at = f"{byte} at offset {offset + err.start:,}" if path is not None else byte
    name = path or "FILE"
    return (f"{where}: {path or 'a file'} is not UTF-8 text ({err.reason}, {at}): convert it "
            f"to UTF-8, e.g. iconv -f latin1 -t utf-8 {name} > {name}.utf8, and give that")


def first_unreadable(paths, where: str) -> str | None:
    """The sentence for the first place in `paths` that is not UTF-8 text, or (in a .jsonl
    file) a line that is not JSON, read through to the end: the reader's own error named
    neither file nor line ("Trailing data at position 4371"; past the MiB the check before a
    run reads, "a file is not UTF-8 text"). None where every file reads."""
    import codecs

    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix not in (".txt", ".jsonl", ".json"):
            continue
        decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
        try:
            with open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 24)
                    try:  # (an error's bytes: the chunk, after what the last one left over)
                        decoder.decode(chunk, final=not chunk)
                    except UnicodeDecodeError as err:
                        return not_utf8(where, err, path, offset=offset - len(
                            err.object) + len(chunk))
                    if not chunk:
                        break
                    offset += len(chunk)
            if suffix != ".jsonl":
                continue
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        json.loads(line)
                    except ValueError as err:
                        return (f"{where}: line {number:,} of {path} is not a JSON object "
                                f"({_json_said(err)}): give one JSON object a line")
        except OSError:
            continue
    return None


def _json_said(err: ValueError) -> str:
    """What the JSON parser found and where in the line: its message alone ended mid-phrase
    ("Invalid control character at", "Unterminated string starting at")."""
    msg, column = getattr(err, "msg", None), getattr(err, "colno", None)
    if msg is None or column is None:
        return str(err).splitlines()[0]
    return f"{msg.removesuffix(' at')} at column {column}"


def _utf8_problem(path: str, where: str, probe: int = 1 << 20) -> list[str]:
    """A text file (.txt, .jsonl, .json) whose first MiB is not UTF-8."""
    if Path(path).suffix.lower() not in (".txt", ".jsonl", ".json"):
        return []
    import codecs

    try:
        with open(path, "rb") as f:
            head = f.read(probe)
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < probe)
    except UnicodeDecodeError as err:
        return [not_utf8(where, err, path)]
    except OSError:
        return []  # (said by validation)
    return []


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
