"""A password in `tracking.uri` stays out of what a standalone run prints and writes."""

import json

from trainer.__main__ import main
from trainer.compose import compose
from trainer.loop import TrainingRun
from trainer.reporting import NullReporter, redact

URI = "http://sweeper:s3cret-pw@127.0.0.1:9/"


def test_redact_masks_only_the_password():
    assert redact(URI) == "http://sweeper:***@127.0.0.1:9/"
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert redact(f"uri={URI} and again {URI}").count("***") == 2


def test_printed_config_and_config_json_hide_the_password(tmp_path, capsys):
    overrides = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
                 "data=synthetic", "data.num_tokens=100_000", "train.batch_size=4",
                 "train.seq_len=32", "train.tokens=256", "schedule=constant",
                 "schedule.warmup_tokens=0", "train.eval_tokens=512", "train.device=cpu",
                 f"tracking.uri={URI}", f"storage_root={tmp_path}"]
    assert main([*overrides, "--cfg"]) == 0
    printed = capsys.readouterr().out
    assert "tracking.uri=http://sweeper:***@127.0.0.1:9/" in printed and "s3cret" not in printed

    training = TrainingRun(compose(overrides), reporter=NullReporter())  # MLflow left out
    training.train()
    written = (training.paths.run_dir / "config.json").read_text()
    assert "s3cret" not in written
    assert json.loads(written)["tracking.uri"] == "http://sweeper:***@127.0.0.1:9/"
