"""A folder or a pattern in `data.paths` stands for its data files (they were refused: a
corpus of 42 hub shards had to be listed by hand)."""

import json
import os

from trainer.compose import compose
from trainer.identity import config_id
from trainer.validation import problems


def _shards(folder, n=3, prefix="train"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rows = [{"text": f"shard {i} document {j}: " + "the lazy dog sleeps. " * 30}
                for j in range(20)]
        (folder / f"{prefix}-{i:05d}-of-{n:05d}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    return sorted(str(p) for p in folder.glob(f"{prefix}-*.jsonl"))


def test_a_folder_is_its_data_files_and_the_same_trials_as_listing_them(tmp_path):
    files = _shards(tmp_path / "corpus" / "data")
    (tmp_path / "corpus" / "README.md").write_text("# a hub repository's card")
    (tmp_path / "corpus" / "dataset_infos.json").write_text("{}")  # (hub metadata, not rows)
    cache = tmp_path / "corpus" / ".cache" / "huggingface"
    cache.mkdir(parents=True)
    (cache / "x.jsonl").write_text('{"text": "a download lock"}\n')
    folder = compose(["data=files", f"data.paths=[{tmp_path / 'corpus'}]"])
    listed = compose(["data=files", f"data.paths=[{','.join(files)}]"])
    assert folder.data.paths == files
    assert problems(folder, network=False) == []
    assert folder.data.fingerprint == listed.data.fingerprint is not None
    assert config_id(folder) == config_id(listed)


def test_a_pattern_is_the_files_it_matches_sorted(tmp_path, monkeypatch):
    files = _shards(tmp_path / "a", n=2) + _shards(tmp_path / "b", n=2)
    (tmp_path / "a" / "notes.txt").write_text("not matched")
    monkeypatch.chdir(tmp_path)
    cfg = compose(["data=files", "data.paths=['*/train-*.jsonl']"])
    assert [os.path.abspath(p) for p in cfg.data.paths] == files
    recursive = compose(["data=files", f"data.paths=['{tmp_path}/**/*.jsonl']"])
    assert recursive.data.paths == files
    assert config_id(cfg) == config_id(recursive)


def test_a_folder_of_several_splits_is_refused_with_a_pattern_for_each(tmp_path):
    """Expanding it whole would train on its test split, and evaluate on data trained on."""
    _shards(tmp_path / "hub" / "data", n=2)
    _shards(tmp_path / "hub" / "data", n=1, prefix="test")
    _shards(tmp_path / "hub" / "data", n=2, prefix="validation")
    cfg = compose(["data=files", f"data.paths=[{tmp_path / 'hub'}]"])
    assert cfg.data.paths == [str(tmp_path / "hub")]
    data = tmp_path / "hub" / "data"
    assert problems(cfg, network=False) == [  # (validation, not test, to tune on)
        f"data.paths: the folder {tmp_path / 'hub'} holds more than one split "
        f"({data / 'train-00000-of-00002.jsonl'} and "
        f"{data / 'validation-00000-of-00002.jsonl'}): give each split's files, e.g. "
        f"'data.paths=[{data / 'train-*.jsonl'}]' "
        f"'data.val_paths=[{data / 'validation-*.jsonl'}]'"]
    fixed = compose(["data=files", f"data.paths=['{data / 'train-*.jsonl'}']"])
    assert len(fixed.data.paths) == 2 and problems(fixed, network=False) == []


def test_a_run_trains_on_a_folder(tmp_path):
    from trainer.loop import run

    _shards(tmp_path / "corpus")
    result = run(compose(["model=tiny", "data=files", f"data.paths=[{tmp_path / 'corpus'}]",
                          "train.seq_len=32", "train.batch_size=4", "train.tokens=1024",
                          "train.eval_tokens=256", f"storage_root={tmp_path / 'runs'}"]))
    assert result.status == "finished"
    assert result.summary["final/eval_loss"] < 5.0  # (bytes: ln 256 = 5.55 untrained)
    # three shards of ~13,000 bytes, 0.05 held out: one alone would make this 0.083
    assert 0.026 < result.summary["derived.data_passes"] < 0.029


def _text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_val_paths_are_the_eval_split_and_paths_are_all_trained_on(tmp_path):
    """A corpus with its own validation files had to hold out part of its training files."""
    from trainer.data import load_tokens

    train = [_text(tmp_path / f"train{i}.txt", f"train text {i} " * 500) for i in range(2)]
    val = _text(tmp_path / "valid.txt", "held-out text " * 300)
    cfg = compose(["data=files", f"data.paths=[{','.join(train)}]", f"data.val_paths=[{val}]",
                   f"data.cache_dir={tmp_path / 'cache'}"])
    assert problems(cfg, network=False) == []
    tokens = load_tokens(cfg.data)  # (bytes: one token a byte)
    assert len(tokens.train) == sum(len(open(p).read()) for p in train)
    assert len(tokens.val) == len("held-out text " * 300)
    assert bytes(tokens.val[:14].astype("uint8")) == b"held-out text "
    # the id: without val_paths as before the key existed; with it, another trial
    alone = compose(["data=files", f"data.paths=[{','.join(train)}]"])
    assert config_id(alone) != config_id(cfg)
    assert alone.data.fingerprint != cfg.data.fingerprint
    # an edited eval file is other data, as an edited training file is
    _text(tmp_path / "valid.txt", "other held-out text " * 300)
    again = compose(["data=files", f"data.paths=[{','.join(train)}]", f"data.val_paths=[{val}]"])
    assert again.data.fingerprint != cfg.data.fingerprint


def test_val_paths_mistakes_are_one_sentence_each(tmp_path):
    train = _text(tmp_path / "a.txt", "text " * 500)
    other = _text(tmp_path / "b.txt", "text " * 500)

    def said(*overrides):
        return problems(compose(list(overrides)), network=False)

    assert said("data=files", f"data.paths=[{train},{other}]", f"data.val_paths=[{other}]") == [
        f"data.val_paths: {other} is in data.paths too, so the eval split would be text the "
        "run trains on: give each file to one of them"]
    assert said("data=files", f"data.paths=[{train}]", f"data.val_paths=[{tmp_path}/v.txt]") \
        == [f"data.val_paths: {tmp_path}/v.txt does not exist; fix the path"]
    assert said(f"data.val_paths=[{other}]") == [
        "data.val_paths is set, but data.source=pystdlib reads no files: it is the eval split "
        "of data=files ('data=files' 'data.paths=[...]' 'data.val_paths=[...]')"]
    assert said("data=files", f"data.paths=[{train}]", "data.val_split=validation") == [
        "data.val_split=validation: data=files has no named splits (only data=hf does); it "
        "holds out data.holdout_fraction=0.05 of the documents for eval: drop "
        "data.val_split, or give the eval split's files as data.val_paths=[...]"]
    tiny = _text(tmp_path / "tiny.txt", "x" * 40)
    assert said("data=files", f"data.paths=[{train}]", f"data.val_paths=[{tiny}]",
                "train.seq_len=64") == [
        "data.val_paths: 40 bytes in all, too few for one eval sequence of train.seq_len=64 "
        "tokens plus one: add data, or lower train.seq_len"]


def test_a_folder_of_splits_is_given_as_paths_and_val_paths(tmp_path):
    _shards(tmp_path / "hub" / "data", n=2)
    _shards(tmp_path / "hub" / "data", n=1, prefix="validation")
    data = tmp_path / "hub" / "data"
    assert problems(compose(["data=hf", f"data.name={tmp_path / 'hub'}"]), network=False) == [
        f"data.name={tmp_path / 'hub'} is a local path, not a hub dataset: use data=files "
        f"'data.paths=[{data / 'train-*.jsonl'}]' "
        f"'data.val_paths=[{data / 'validation-00000-of-00001.jsonl'}]'"]
    cfg = compose(["data=files", f"data.paths=['{data / 'train-*.jsonl'}']",
                   f"data.val_paths=['{data / 'validation-*.jsonl'}']",
                   f"data.cache_dir={tmp_path / 'cache'}"])
    assert len(cfg.data.paths) == 2 and len(cfg.data.val_paths) == 1
    assert problems(cfg, network=False) == []
    from trainer.data import load_tokens

    def text_bytes(paths):
        return sum(len(json.loads(line)["text"].encode()) for p in paths
                   for line in open(p))

    tokens = load_tokens(cfg.data)  # (bytes: one token a byte, rows joined as they are)
    assert len(tokens.train) == text_bytes(cfg.data.paths)
    assert len(tokens.val) == text_bytes(cfg.data.val_paths)


def test_a_sweep_hands_its_workers_every_data_file_as_an_absolute_path(tmp_path, monkeypatch):
    """A worker starts in another folder than the launch: relative eval files were not found
    there."""
    from orchestrator.trials import files_from_anywhere

    _text(tmp_path / "d" / "train.txt", "train text " * 500)
    _text(tmp_path / "d" / "valid.txt", "held-out text " * 300)
    monkeypatch.chdir(tmp_path)
    cfg = compose(["data=files", "data.paths=[d/train.txt]", "data.val_paths=['d/v*.txt']"])
    assert cfg.data.val_paths == ["d/valid.txt"]
    anywhere = files_from_anywhere(cfg)
    assert anywhere.data.paths == [str(tmp_path / "d" / "train.txt")]
    assert anywhere.data.val_paths == [str(tmp_path / "d" / "valid.txt")]
    assert config_id(anywhere) == config_id(cfg)
