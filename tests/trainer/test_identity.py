import pytest

from trainer.compose import compose
from trainer.identity import canonical_json, config_id

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


def test_ids_of_existing_runs_do_not_move():
    """A new config key must leave the ids of runs that do not use it alone (else every stored
    trial would look new and train again): these SP ids were recorded before the norm-test keys
    and the attention-scale rule existed."""
    assert config_id(compose(["model.param=sp"])) == \
        "7c02787c9aa2f1c347795b01b5a2a771c2b773faff84c8241965861dc6d7014d"
    assert config_id(compose(["model=tiny", "model.param=sp", "optim.lr=0.01",
                              "train.batch_size=8"])) == \
        "88836d6ff641f1bd926066cd8fe0a3a9fe5311fcf83be648ebd4346022aababf"


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
