"""The data fingerprint: a hash of the bytes a run reads, where its config does not say them.

`data=pystdlib` reads the running Python's standard library, which differs between Python
versions, and `data=files` reads files that may change under the same paths; the config alone
does not pin what such a run trains on. So `compose` sets `data.fingerprint` to a hash of that
content (and of a `tokenizers` file, whose path says as little), and the fingerprint is a config
key like any other: it is part of the trial id, it is logged with the run's params, and
`trainer.data.load_tokens` refuses to train a config whose fingerprint is not that of the data
this machine would read (a worker on another Python than its driver).

Sources the config describes fully have no fingerprint (`None`): `synthetic` (its generator
parameters are config keys) and `hf` (name, configuration, `data.revision` and splits are config
keys; pin `data.revision` for a dataset that may change, since resolving it needs the network).

Hashing the stdlib reads ~30 MB, so the content hash is cached on disk, keyed by the file list
with each file's size and mtime (a stat walk, a few ms), and once per process in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sysconfig
from pathlib import Path

from trainer.config import DataConfig, DataSource

FINGERPRINT_VERSION = "1"


def stdlib_files() -> list[Path]:
    """The running Python's standard-library `.py` files, sorted, site-packages excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        found += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return found


def data_fingerprint(cfg: DataConfig) -> str | None:
    """Hash of the content `cfg` reads where its keys do not pin it; None where they do, or
    where a file is missing (validation then names it; nothing can be trained on it). The
    files of `data.val_paths` follow those of `data.paths` (which list holds a file is in the
    trial id by their names)."""
    try:
        # (the files' sizes and mtimes in the key: a file edited while this process lives, a
        # notebook composing again, gets its new fingerprint; the stdlib does not change)
        files = (*cfg.paths, *cfg.val_paths) if cfg.source is DataSource.files else ()
        stats = tuple((st.st_size, st.st_mtime_ns) for st in
                      (os.stat(p) for p in (*files, cfg.tokenizer) if p is not None))
        return _fingerprint(cfg.source, files, cfg.tokenizer, cfg.cache_dir, stats)
    except OSError:
        return None


@functools.lru_cache(maxsize=256)
def _fingerprint(source: DataSource, paths: tuple[str, ...], tokenizer: str | None,
                 cache_dir: str, stats: tuple = ()) -> str | None:
    if source is DataSource.pystdlib:
        files = stdlib_files()
    elif source is DataSource.files and paths:
        files = [Path(p) for p in paths]
    else:
        files = []
    if tokenizer is not None:
        files.append(Path(tokenizer))
    if not files:
        return None
    return content_hash(files, cache_dir=Path(cache_dir) / "fingerprints")


def content_hash(files: list[Path], *, cache_dir: Path) -> str:
    """SHA-256 (32 hex digits) of the files' names and bytes, in order; cached on disk under
    the files' names, sizes and mtimes, so a file that changes is read again."""
    stats = hashlib.sha256(FINGERPRINT_VERSION.encode())
    for path in files:
        st = path.stat()
        stats.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    entry = cache_dir / f"{stats.hexdigest()[:32]}.json"
    try:
        return json.loads(entry.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        pass
    content = hashlib.sha256(FINGERPRINT_VERSION.encode())
    for path in files:
        content.update(path.name.encode())
        hash_file(content, path)
    fingerprint = content.hexdigest()[:32]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint}))
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only cache only costs the next process a re-read
    return fingerprint


def hash_file(h, path: Path, chunk: int = 1 << 20) -> None:
    """Feed the file's bytes to the hash `h` a MiB at a time (a corpus of gigabytes was read
    into memory whole, twice per run start)."""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
