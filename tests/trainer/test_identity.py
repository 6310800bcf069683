import dataclasses
import os

import pytest

from trainer.compose import compose
from trainer.config import DataConfig, DataSource
from trainer.data import check_fingerprint
from trainer.errors import ConfigError
from trainer.fingerprint import content_hash, data_fingerprint
from trainer.identity import INTRODUCED, canonical_json, config_id, past_ids, written_id

BASE = ["optim.lr=0.003", "train.batch_size=16"]


def _id(*extra):
    return config_id(compose(BASE + list(extra)))


@pytest.mark.parametrize("change", [
    "optim.lr=0.01", "train.batch_size=32", "optim.weight_decay=0.1", "train.tokens=2_000_000",
    "model.width=128", "model.param=sp", "schedule=wsd", "seed=1", "data=synthetic",
    "train.seq_len=64", "model.depth=3",
])
def test_changes_that_alter_the_result_alter_the_id(change):
    assert _id(change) != _id()


@pytest.mark.parametrize("change", [
    "tracking.uri=sqlite:///x.db", "tracking.experiment=other", "storage_root=/elsewhere",
    "run_dir=/tmp/somewhere", "checkpoint_dir=/tmp/ck", "train.log_every_steps=1",
    "train.checkpoint_every_tokens=4096", "train.keep_checkpoints=5", "data.cache_dir=/c",
])
def test_paths_and_cadences_do_not_alter_the_id(change):
    assert _id(change) == _id()


@pytest.mark.parametrize("a, b", [
    ("optim.lr=0.001", "optim.lr=1e-3"),
    ("optim.lr=0.001", "optim.lr=1.0e-03"),
    ("optim.lr=0.30000000000000004", "optim.lr=0.3"),  # 3 * 0.1, as a grid may compute it
])
def test_floats_are_normalised(a, b):
    assert config_id(compose([a])) == config_id(compose([b]))


def test_id_is_sha256_of_sorted_canonical_json():
    cfg = compose(BASE)
    text = canonical_json(cfg)
    assert text.startswith('{"data.chain_seed":1234,"data.concentration":0.3,')
    assert len(config_id(cfg)) == 64 and '"tracking' not in text


def without_fingerprint(cfg):
    """`cfg` as composed before the data fingerprint existed."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fingerprint=None))


def test_ids_of_existing_runs_do_not_move_but_for_the_fingerprint():
    """Policy (trainer/identity.py): a new key at its introduced default leaves ids alone (else
    every stored trial would look new and train again): these SP ids were recorded before the
    norm-test keys and the attention-scale rule existed. The data fingerprint alone moved the
    ids of runs on the standard library, once: the data of an old id cannot be known."""
    for overrides, old_id in [
        (["model.param=sp"], "7c02787c9aa2f1c347795b01b5a2a771c2b773faff84c8241965861dc6d7014d"),
        (["model=tiny", "model.param=sp", "optim.lr=0.01", "train.batch_size=8"],
         "88836d6ff641f1bd926066cd8fe0a3a9fe5311fcf83be648ebd4346022aababf"),
    ]:
        cfg = compose(overrides)
        assert config_id(without_fingerprint(cfg)) == old_id
        assert cfg.data.fingerprint is not None and config_id(cfg) != old_id


@pytest.mark.parametrize("overrides, old_id", [
    (["data=synthetic"], "c5a5b49fb014630698a8538ab8728c8e50d81ab7ae9e55ba9a145a1ec3bfb61e"),
    (["data=hf", "data.name=x/y"],
     "ce1d0622732cb24a889e91fd177dbc80e08c6f6264fe63a0e885fef13fa02841"),
])
def test_data_pinned_by_its_keys_keeps_its_id(overrides, old_id):
    """Synthetic and hub data have no fingerprint: their keys say what they read."""
    cfg = compose(["model.param=sp", *overrides])
    assert cfg.data.fingerprint is None and config_id(cfg) == old_id


def test_a_key_at_its_introduced_default_is_left_out_elsewhere_it_counts():
    cfg = compose(["model.param=sp"])
    text = canonical_json(cfg)
    assert not any(f'"{k}"' in text for k in INTRODUCED if k != "data.fingerprint")
    assert config_id(compose(["model.param=sp", "data=hf", "data.name=x/y",
                              "data.revision=v1"])) != config_id(compose(
        ["model.param=sp", "data=hf", "data.name=x/y"]))
    # A norm-test run sets a key away from its default and carries it in its id.
    adaptive = ["model.param=sp", "train.batch_schedule=norm_test", "train.micro_batch_size=4"]
    assert config_id(compose(adaptive + ["train.norm_test_eta=0.2"])) != \
        config_id(compose(adaptive))
    # At their defaults they are left out: this id (norm-test keys always in) moved once.
    assert config_id(without_fingerprint(compose(adaptive))) != \
        "955fc1321f8708068825b333b812bcdebc9e509dfa5d7f8cd3472c5dd78bd849"


def test_another_corpus_is_another_trial_and_is_refused_where_it_is_not(tmp_path):
    """Two machines with different standard libraries must not share an id."""
    cfg = compose([])
    moved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fingerprint="0" * 32))
    assert config_id(moved) != config_id(cfg)
    check_fingerprint(cfg.data)
    with pytest.raises(ConfigError, match="data.fingerprint=0+ is not the data this machine"):
        check_fingerprint(moved.data)


def test_file_fingerprint_follows_content_and_is_cached_by_stat(tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text("hello")
    data = DataConfig(source=DataSource.files, paths=[str(doc)], cache_dir=str(tmp_path / "c"))
    first = data_fingerprint(data)
    assert first == content_hash([doc], cache_dir=tmp_path / "c" / "fingerprints")
    assert len(list((tmp_path / "c" / "fingerprints").glob("*.json"))) == 1
    doc.write_text("HELLO")
    os.utime(doc, ns=(1, 1))  # a new mtime: the cached hash is not trusted
    assert content_hash([doc], cache_dir=tmp_path / "c" / "fingerprints") != first
    assert data_fingerprint(DataConfig(source=DataSource.synthetic)) is None


def test_runs_whose_network_the_attention_rule_changed_get_new_ids():
    """muP scores were attn_mult/d_head and SP ignored attn_mult: those runs trained another
    network than the same config trains now, so their stored results must not be reused.
    (Ids of these configs before the rule.)"""
    assert config_id(compose([])) != \
        "234b283a5cebdba33ce5b3b4ccc80ac1ac407bd0284dbc406a6cd8a949088522"
    assert config_id(compose(["model=tiny", "optim.lr=0.01", "train.batch_size=8"])) != \
        "c1e60c253d637f205aea715544b1fe2e762ae028a83ec745da43f5cbaa1da70e"
    assert '"model.base_head_dim"' in canonical_json(compose(["model.param=sp",
                                                              "model.attn_mult=2"]))
    assert '"model.base_head_dim"' not in canonical_json(compose(["model.param=sp"]))


def test_world_size_enters_the_id_of_a_norm_test_run_over_several_processes():
    """The norm test's units are micro-batches of every rank: at W = 2 a run estimated and grew
    otherwise than at W = 1 under the same id, and a stored result stood for the other."""
    from trainer.compose import compose
    from trainer.identity import config_id

    norm = ["train.batch_schedule=norm_test", "train.batch_size=16",
            "train.micro_batch_size=4"]
    one, two, four = (config_id(compose(norm + [f"train.world_size={w}"])) for w in (1, 2, 4))
    assert len({one, two, four}) == 3
    assert one == config_id(compose(norm))  # one process keeps its id
    constant = [config_id(compose(["train.batch_size=16", "train.micro_batch_size=4",
                                   f"train.world_size={w}"])) for w in (1, 2)]
    assert constant[0] == constant[1]  # a constant batch: W changes only rounding


def test_a_file_edited_while_the_process_lives_gets_its_new_fingerprint(tmp_path):
    """The in-process cache was keyed by paths only: composed again after an edit (a notebook,
    a test), the config kept the old fingerprint and the run refused it as another machine's."""
    path = tmp_path / "a.txt"
    path.write_text("one text " * 100)
    before = compose(["data=files", f"data.paths=[{path}]"]).data.fingerprint
    path.write_text("another, longer text " * 100)
    after = compose(["data=files", f"data.paths=[{path}]"])
    assert after.data.fingerprint != before
    check_fingerprint(after.data)  # (it refused: "is not the data this machine reads")


def test_a_trial_whose_files_changed_since_it_was_composed_says_what_to_do(tmp_path):
    """A researcher's sweep file edited while the sweep ran: its trial failed with "compose it
    again here for a new trial id", which no sweep user can do."""
    path = tmp_path / "a.txt"
    path.write_text("one text " * 100)
    cfg = compose(["data=files", f"data.paths=[{path}]"])
    path.write_text("another, longer text " * 100)
    with pytest.raises(ConfigError) as err:
        check_fingerprint(cfg.data)
    assert str(err.value.problems[0]).startswith(
        f"data.fingerprint={cfg.data.fingerprint[:12]} is not the data this machine reads: the "
        "files under data.paths (or data.val_paths, data.tokenizer) hash to ")
    assert str(err.value.problems[0]).endswith(
        "here, changed since the trial was composed (or other files at those paths): put them "
        "back and run it again (`sweep resume`), or launch the sweep's spec again to train on "
        "them under new trial ids")


def test_fingerprinted_files_enter_the_id_by_name_not_by_folder(tmp_path, monkeypatch):
    """The fingerprint hashes each file's name and bytes: `data/a.txt`, `./data/a.txt` and its
    absolute path are one trial (re-launched from a spelling or a folder of its own they were
    trained again), a corpus copied to another folder too; other bytes or another name are not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("some text to train on " * 100)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a.txt").write_text("some text to train on " * 100)
    (tmp_path / "copy" / "b.txt").write_text("some text to train on " * 100)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("another text entirely " * 100)

    def files_id(path, *extra):
        return config_id(compose(BASE + ["data=files", f"data.paths=[{path}]", *extra]))

    one = files_id("data/a.txt")
    assert one == files_id("./data/a.txt") == files_id(tmp_path / "data" / "a.txt") \
        == files_id("data//a.txt") == files_id("copy/a.txt")
    assert files_id("other/a.txt") != one and files_id("copy/b.txt") != one
    # ... and under the rule before, each spelling was its own trial: those are its past ids.
    cfg = compose(BASE + ["data=files", "data.paths=[./data/a.txt]"])
    as_written = written_id(cfg)
    assert as_written != one and as_written in past_ids(cfg)
    assert config_id(without_fingerprint(cfg)) in past_ids(cfg) and one not in past_ids(cfg)
    # A file at the top of the folder ran from keeps the id it had.
    (tmp_path / "top.txt").write_text("some text to train on " * 100)
    top = compose(BASE + ["data=files", "data.paths=[top.txt]"])
    assert config_id(top) == written_id(top)
    assert config_id(without_fingerprint(top)) in past_ids(top)
    assert config_id(top) not in past_ids(top)
    # an earlier version's spellings of it: ./top.txt, its absolute path
    for spelt in ("./top.txt", str(tmp_path / "top.txt")):
        earlier = compose(BASE + ["data=files", f"data.paths=[{spelt}]"])
        assert written_id(earlier) in past_ids(top)


def test_power_runs_the_paper_s_anchors_changed_get_new_ids_and_no_others():
    """The Power schedule's warmup and decay now read η_power at N_warmup and at the decay's
    start (Shen et al.): a run whose β·a·n^b falls below optim.lr by its end trained another LR
    curve before, so its stored result must not stand for the new one; other runs keep ids."""
    import json

    from trainer.identity import POWER_ANCHOR_KEY, _sha

    def mark(*overrides):
        return json.loads(canonical_json(compose(["model.param=sp", *overrides]))).get(
            POWER_ANCHOR_KEY)

    # β·a·n^b = 16·4·n^−0.51: 0.056 at 1M tokens (the end), 0.22 at 65,536 (the warmup's end)
    assert mark() is None  # optim.lr 3e-3: capped throughout, as every default run
    assert mark("optim.lr=0.05") is None
    assert mark("optim.lr=0.1") == "decay"
    assert mark("optim.lr=0.5") == "warmup+decay"
    assert mark("optim.lr=0.5", "schedule.decay_fraction=0") == "warmup"
    assert mark("optim.lr=0.1", "schedule=wsd") is None
    assert mark("optim.lr=0.1", "schedule.b=0") is None
    # the id a marked run had before the rule (its canonical JSON without the mark) moved
    cfg = compose(["model.param=sp", "optim.lr=0.1"])
    before = json.loads(canonical_json(cfg))
    before.pop(POWER_ANCHOR_KEY)
    assert config_id(cfg) != _sha(json.dumps(before, sort_keys=True, separators=(",", ":")))


def test_budgets_of_one_power_family_share_a_trunk_whatever_their_decay_s_mark(monkeypatch):
    """A larger budget's power law falls below optim.lr by its end and a smaller one's does
    not: their decays differ from the old rule's, their trunk (warmup, stable phase) does not."""
    from orchestrator.families import family_id

    small, large = (compose(["optim.lr=0.05", f"train.tokens={t}"])
                    for t in (262_144, 4_194_304))
    assert '"schedule.power_anchor"' not in canonical_json(small)
    assert '"schedule.power_anchor":"decay"' in canonical_json(large)
    assert family_id(small) == family_id(large)
    # a warmup that differs is the trunk's: its id carries the mark
    from trainer.identity import flatten, power_anchored

    warm = [compose(["optim.lr=0.5", f"train.tokens={t}"]) for t in (262_144, 4_194_304)]
    assert power_anchored(flatten(warm[0]), phases=("warmup",)) == "warmup"
    assert family_id(warm[0]) == family_id(warm[1])
    marked = family_id(warm[0])
    # budgets split only by their default warmups (which follow train.tokens under 65,536)
    # are told so ("set schedule.warmup_tokens"): their warmup marks, on either side of the
    # cap, split that diagnosis's key too, and they read "alone"
    from orchestrator.families import TOKENS_KEY, WARMUP_KEY

    loose = [compose(["optim.lr=3e-4", "schedule.a=1e-3", f"train.tokens={t}"])
             for t in (20_480, 30_720)]
    assert [power_anchored(flatten(c), phases=("warmup",)) for c in loose] == [None, "warmup"]
    assert len({family_id(c, without=(TOKENS_KEY, WARMUP_KEY)) for c in loose}) == 1
    monkeypatch.setattr("orchestrator.families.power_anchored", lambda *a, **k: None)
    assert family_id(warm[0]) != marked
