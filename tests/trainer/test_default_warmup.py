"""The default warmup: never the reason a config fails, and never a reason a trial id moves."""

import dataclasses

import pytest

from trainer.compose import Composer, compose
from trainer.config import CONF_DIR
from trainer.identity import config_id
from trainer.schedules import DEFAULT_WARMUP_TOKENS, default_warmup_tokens
from trainer.validation import problems


@pytest.mark.parametrize("budget, warmup", [
    (10_000_000, 65_536), (655_360, 65_536), (65_536, 65_536),  # the fixed default, as before
    (65_535, 6_553), (60_000, 6_000), (2_048, 204), (0, 0),     # budgets it cannot serve
])
def test_default_warmup_rule(budget, warmup):
    assert default_warmup_tokens(budget) == warmup


# Ids computed on the code before the rule existed (commit 46f57a2), when every schedule YAML
# set warmup_tokens: 65_536. Each config was valid then, so it must keep its values and its id:
# otherwise a re-launch would train every stored trial again. They are SP runs: muP runs took
# new ids with the attention-scale rule (a changed network, see trainer/identity.py).
# Id policy since the data fingerprint (trainer/identity.py): these are ids of the config
# without `data.fingerprint`; the fingerprint of the standard library moved them once, on
# purpose, since the corpus they were trained on cannot be known. A norm-test run keeps its
# id only with its norm-test keys off their introduced defaults (at a default, a key is left
# out of the id: such runs moved once, see trainer/identity.py).
IDS_BEFORE_THE_RULE = [
    ([], "7c02787c9aa2f1c347795b01b5a2a771c2b773faff84c8241965861dc6d7014d"),
    (["schedule=wsd"], "3de81a461fc2ff6177b0e958df48deb1b3325604cce83f046901057d96da7dc7"),
    (["schedule=cosine", "train.tokens=65536"],
     "b034b2f11600d3693306bd3f3e7cc8e153f90ef55470b7bc601d5bc73322f806"),
    (["schedule=constant", "train.tokens=65536", "train.batch_size=8", "train.seq_len=64"],
     "f66e2462b356e97094430c4afba54f243a609d9734d3f4603769476064b007bb"),
    (["schedule=linear", "train.tokens=2000000", "optim.lr=0.01"],
     "033530da8f43c71bca2b72862866a838d5c12d98653dc305aa994272f704de4d"),
    (["model=small", "schedule=power", "train.tokens=100000"],
     "a4014996ef3853878d8be7ee5301027963d3dfbcdc9a6985e31f5d8832421aa4"),
    (["schedule=wsd", "schedule.warmup_tokens=1024", "train.tokens=60000"],
     "3ca7d098d8a3b5990cf1694bb6e92568a37639f36aeb570be4a8091a236cb7a0"),
    (["schedule=constant", "schedule.warmup_tokens=0", "train.tokens=20000"],
     "f40c071095fd6c9ddaba350b03301949afb7d58752a67f8211536e14657990bd"),
    (["train.batch_schedule=norm_test", "train.micro_batch_size=4", "train.norm_test_eta=0.2",
      "train.norm_test_every=5", "train.max_batch_size=64"],
     "b374455812d5b2e1c520098598140d1304dcd5e9f6e0ea6cb73292a99048e9e2"),
]


@pytest.mark.parametrize("overrides, trial_id", IDS_BEFORE_THE_RULE)
def test_configs_valid_before_the_rule_keep_their_id(overrides, trial_id):
    overrides = [*overrides, "model.param=sp"]
    for cfg in (compose(overrides), Composer()(overrides)):
        assert problems(cfg, network=False) == []
        unfingerprinted = dataclasses.replace(cfg.data, fingerprint=None)
        assert config_id(dataclasses.replace(cfg, data=unfingerprinted)) == trial_id
        assert config_id(cfg) != trial_id  # the one-time move of the fingerprint
        explicit = "schedule.warmup_tokens" in " ".join(overrides)
        assert explicit or cfg.schedule.warmup_tokens == DEFAULT_WARMUP_TOKENS


@pytest.mark.parametrize("schedule", sorted(p.stem for p in (CONF_DIR / "schedule").glob("*")))
def test_a_small_budget_validates_with_the_documented_warmup(schedule):
    overrides = [f"schedule={schedule}", "train.tokens=60000"]
    for cfg in (compose(overrides), Composer()(overrides)):
        assert problems(cfg, network=False) == []
        assert cfg.schedule.warmup_tokens == 6_000
    assert "a tenth of train.tokens" in (CONF_DIR / "schedule" / f"{schedule}.yaml").read_text()


def test_the_fast_path_fills_the_default_from_the_trials_own_budget():
    composer = Composer()
    composer(["train.tokens=1000000"])  # caches the base of these group choices
    assert composer(["train.tokens=60000"]).schedule.warmup_tokens == 6_000
    assert composer(["train.tokens=1000000"]).schedule.warmup_tokens == 65_536


def test_an_explicit_warmup_too_large_is_refused_in_one_sentence():
    found = problems(compose(["train.tokens=60000", "schedule.warmup_tokens=65536"]),
                     network=False)
    assert found == ["schedule.warmup_tokens=65536 exceeds train.tokens=60000: lower "
                     "schedule.warmup_tokens, or leave it unset (null) for the default, which "
                     "fits any budget"]
