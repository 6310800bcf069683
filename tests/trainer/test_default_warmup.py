"""The default warmup: never the reason a config fails, and never a reason a trial id moves."""

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
# otherwise a re-launch would train every stored trial again.
IDS_BEFORE_THE_RULE = [
    ([], "234b283a5cebdba33ce5b3b4ccc80ac1ac407bd0284dbc406a6cd8a949088522"),
    (["schedule=wsd"], "9a8153da8b90d0c040e3ff7b50c5856c5f5c9834442edb341e75011f1af82431"),
    (["schedule=cosine", "train.tokens=65536"],
     "7cbd4706c45d819cc3e33ac8626b3ceaffe2fa1266e3c53956ea23d8e387f374"),
    (["schedule=constant", "train.tokens=65536", "train.batch_size=8", "train.seq_len=64"],
     "4c8d6ab8a5d5529894fce043e2d2380be7fb9dc8278287b7131248a3bfc4f762"),
    (["schedule=linear", "train.tokens=2000000", "optim.lr=0.01"],
     "f710b6dd04d784e59f2fe05b6dfc3e605232c2fb7cbf20648f85a39dd7303b41"),
    (["model=small", "schedule=power", "train.tokens=100000"],
     "f1cd189240b24a22f6401151038cef4a3c02c9af06980b3d46399716ad61bdb3"),
    (["schedule=wsd", "schedule.warmup_tokens=1024", "train.tokens=60000"],
     "45b1fbd8f550c5f107674132551c13dafb6f939fb63bedad099c00db93eee092"),
    (["schedule=constant", "schedule.warmup_tokens=0", "train.tokens=20000"],
     "9e8118550ccba19b1955eb391ec81b41be923a0fc9df559fec9f986bd7752d85"),
    (["train.batch_schedule=norm_test", "train.micro_batch_size=4"],
     "6fcb3d4b9a9b13d6223b29f40ac0ea07438ecafe3f8f1b382e0cd488278ad129"),
]


@pytest.mark.parametrize("overrides, trial_id", IDS_BEFORE_THE_RULE)
def test_configs_valid_before_the_rule_keep_their_id(overrides, trial_id):
    for cfg in (compose(overrides), Composer()(overrides)):
        assert problems(cfg, network=False) == []
        assert config_id(cfg) == trial_id
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
