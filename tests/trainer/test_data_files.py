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


def test_a_folder_of_several_splits_is_refused_with_its_training_pattern(tmp_path):
    """Expanding it whole would train on its test split, and evaluate on data trained on."""
    _shards(tmp_path / "hub" / "data", n=2)
    _shards(tmp_path / "hub" / "data", n=1, prefix="test")
    cfg = compose(["data=files", f"data.paths=[{tmp_path / 'hub'}]"])
    assert cfg.data.paths == [str(tmp_path / "hub")]
    data = tmp_path / "hub" / "data"
    assert problems(cfg, network=False) == [
        f"data.paths: the folder {tmp_path / 'hub'} holds more than one split "
        f"({data / 'train-00000-of-00002.jsonl'} and {data / 'test-00000-of-00001.jsonl'}), "
        "and all of it would be trained on; give the training split's files, e.g. "
        f"'data.paths=[{data / 'train-*.jsonl'}]' (eval is held out of them: "
        "data.holdout_fraction)"]
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
