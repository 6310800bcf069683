"""`data.paths` entries that name many files: a folder, or a glob pattern.

A corpus downloaded from the hub is a folder of shards (`data/train-00000-of-00042.parquet`),
and listing them by hand in an override is error-prone past a few. So an entry that is a folder
stands for the data files under it (recursively, hidden ones such as `.cache/` left out), and one
with `*`, `?` or `[` that is not itself a file stands for the files it matches (`**` crosses
folders). Both expand, sorted by path, when the config is composed: the config, its trial id and
its data fingerprint then hold the files themselves, so `data.paths=[shards/]` and the same files
listed are the same trials, and a shard added to the folder later is other data (as an edited
file is).

What cannot expand is left as given, for validation to say: a pattern that matches nothing, a
folder without data files, and a folder holding more than one split (`train-*` beside `test-*`),
which would train on its eval split without a word.
"""

from __future__ import annotations

import glob
import os
import re

DATA_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")

_METADATA = {"dataset_infos.json", "dataset_info.json", "dataset_dict.json", "state.json"}
_TRAIN_WORDS = {"train", "training"}
_VALIDATION_WORDS = {"valid", "validation", "val", "dev", "eval", "evaluation"}
_TEST_WORDS = {"test", "testing"}


def is_pattern(path: str) -> bool:
    """Whether `path` is a glob pattern rather than a file's name."""
    return any(c in path for c in "*?[") and not os.path.isfile(path)


def expand(paths: list[str]) -> list[str]:
    """`paths` with each folder and each pattern replaced by its data files, sorted (see the
    module docstring); entries that cannot expand are kept, so validation names them."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path) and not _saved_by_datasets(path):
            files = folder_files(path)
            out += files if files and not splits_of(path, files) else [path]
        elif is_pattern(path):
            files = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            out += files or [path]
        else:
            out.append(path)
    return out


def folder_files(folder: str) -> list[str]:
    """The data files under `folder`, recursively, sorted by path; left out: files and folders
    whose names start with a dot (`.cache/huggingface`, `.gitattributes`), a hub repository's
    or `datasets`' metadata (`dataset_infos.json`) and folders `save_to_disk` wrote."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")
                       and not _saved_by_datasets(os.path.join(dirpath, d))]
        found += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")
                  and f.lower().endswith(DATA_SUFFIXES) and f not in _METADATA]
    return sorted(found)


def splits_of(folder: str, files: list[str]) -> tuple[str, str] | None:
    """The first training file and the first held-out file among `files` (`folder_files`: a
    validation split's before a test split's, as hyperparameters are tuned on the former), by
    the words of their paths below `folder`, or None where the files do not name both kinds."""
    found: dict[str, str] = {}
    for path in files:
        words = set(re.split(r"[^a-z]+", path[len(folder):].lower()))
        for kind, named in (("train", _TRAIN_WORDS), ("validation", _VALIDATION_WORDS),
                            ("test", _TEST_WORDS)):
            if words & named:
                found.setdefault(kind, path)
    held_out = found.get("validation") or found.get("test")
    return (found["train"], held_out) if "train" in found and held_out else None


def split_pattern(first: str, files: list[str]) -> str:
    """A pattern for the files of the split whose first file is `first` (`splits_of`), in a
    folder that holds several: its folder and name up to its first digit
    (`data/train-*.parquet`), or the file itself where no other shares that."""
    parent, name = os.path.split(first)
    stem = re.split(r"\d", name, maxsplit=1)[0]
    matching = [p for p in files if os.path.split(p)[0] == parent
                and os.path.basename(p).startswith(stem)]
    if len(matching) == 1:
        return first
    return os.path.join(parent, f"{stem}*{os.path.splitext(name)[1]}")


def _saved_by_datasets(folder: str) -> bool:
    # (a folder `datasets` wrote with save_to_disk: its arrow files are no corpus, and
    # validation says how to write it as parquet)
    return (os.path.isfile(os.path.join(folder, "dataset_dict.json"))
            or os.path.isfile(os.path.join(folder, "dataset_info.json")))
