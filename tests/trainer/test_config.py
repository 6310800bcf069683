import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.compose import compose
from trainer.config import CONF_DIR, Param, ScheduleName
from trainer.errors import ConfigError
from trainer.validation import problems

GROUPS = ["model", "data", "optim", "schedule"]


@pytest.mark.parametrize("group, option", [
    (group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))
])
def test_every_yaml_composes_against_its_schema(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg.model.width > 0
    if group == "schedule":
        assert cfg.schedule.name is ScheduleName(option)


def test_overrides_reach_typed_fields():
    cfg = compose(["optim.lr=1e-2", "model.param=sp", "train.batch_size=32", "seed=3"])
    assert cfg.optim.lr == 0.01 and cfg.model.param is Param.sp
    assert cfg.train.batch_size == 32 and cfg.seed == 3


def test_a_key_given_twice_names_the_override_that_is_bad():
    # (the first override of the key was quoted, whichever was bad)
    for overrides in (["optim.lr=0.01", "optim.lr=abc"], ["optim.lr=abc", "optim.lr=0.01"]):
        with pytest.raises(ConfigError, match=r"in override 'optim.lr=abc'"):
            compose(overrides)
    with pytest.raises(ConfigError) as err:
        compose(["train.tokens=8192", "train.tokens=1e5"])
    assert str(err.value).endswith("in override 'train.tokens=1e5': Value '100000.0' of type "
                                   "'float' could not be converted to Integer; write it as a "
                                   "whole number, e.g. train.tokens=100_000")


def test_a_tracking_uri_mlflow_cannot_use_is_refused_before_the_run(tmp_path):
    """A scheme MLflow has no store for, a path (its file store) or a folder: a traceback after
    the run's folder was made, or ~100 s of MLflow's retries first."""
    fix = "tracking.uri (or leave it unset to log to files only)"
    for uri, said in (
            ("foo://x", "tracking.uri=foo://x: MLflow has no store for 'foo://' URIs; give "
                        f"sqlite:///PATH.db, http(s)://HOST:PORT or postgresql://... to {fix}"),
            (f"sqlite:///{tmp_path}", f"tracking.uri=sqlite:///{tmp_path} is a folder: an SQLite "
                                      "store is a file; give one in it, e.g. "
                                      f"sqlite:///{tmp_path / 'mlflow.db'}, to {fix}"),
            (str(tmp_path / "store"), f"tracking.uri={tmp_path / 'store'} is a path (MLflow's "
                                      "file store, which proxysweep does not use): give an "
                                      "SQLite store, e.g. "
                                      f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}, or a "
                                      f"server, to {fix}")):
        assert problems(compose([f"tracking.uri={uri}"])) == [said]
    assert problems(compose([f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"])) == []
    # an empty experiment name: MLflow's traceback once the run had started
    assert problems(compose([f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
                             "tracking.experiment="])) == [
        "tracking.experiment is empty: give the MLflow experiment's name, e.g. "
        "tracking.experiment=proxysweep (the default)"]


def test_a_value_of_the_wrong_type_says_what_the_key_takes():
    """'could not be converted to Float' named no fix: the kind of value and an example."""
    for override, said in (
            ("optim.lr=abc", "could not be converted to Float; optim.lr takes a number, e.g. "
                             "optim.lr=0.003 (python -m trainer --cfg prints every key with "
                             "its default)"),
            ("train.batch_size=3.5", "could not be converted to Integer; train.batch_size takes "
                                     "a whole number, e.g. train.batch_size=16 (python -m "
                                     "trainer --cfg")):
        with pytest.raises(ConfigError) as err:
            compose([override])
        assert f"in override '{override}'" in str(err.value) and said in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("model.widht=3", "unknown config key 'model.widht': did you mean model.width? check"),
    ("+foo=1", "unknown config key 'foo'"),
    ("model.width=abc", "bad value for 'model.width'"),
    ("schedule=nope", "unknown option 'nope' for config group 'schedule': choose one of"),
    ("optim.lr=[1", "cannot parse override 'optim.lr=[1'"),
    ("=1", "=1: an override needs a key, e.g. optim.lr=1e-3"),  # (was Hydra's ValueError)
    ("model.param=xx", "expected one of [mup, sp]"),
    ("+optim.extra=3", "unknown config key 'optim.extra'"),
    ("optim.lr=choice(1e-3,1e-2)", "optim.lr=choice(1e-3,1e-2) is a sweep expression: one run "
                                   "takes one value per key"),
    ("train.tokens=foo", "bad value for 'train.tokens' in override 'train.tokens=foo'"),
    ("model=huge", "unknown option 'huge' for config group 'model': choose one of gpt124m, "
                   "small, tiny"),
    ("data.paths=/d/a.txt", "str is not a ListConfig, list or tuple; a list is written in "
                            "brackets, e.g. 'data.paths=[/d/a.txt]' (quoted for the shell)"),
    # (the key named, with no value to give; a misspelt top-level name suggested nothing)
    ("optim.lr=null", "is not Optional; optim.lr needs a value, e.g. optim.lr=0.003 (its "
                      "default: leave it out to keep it)"),
    ("trian.tokens=100", "unknown config key 'trian': did you mean train.tokens? check"),
    # another trainer's names (told nothing), and a misspelt last part under another group
    ("optim.learning_rate=1e-3", "unknown config key 'optim.learning_rate': did you mean "
                                 "optim.lr? check"),
    ("optim.wd=0.1", "did you mean optim.weight_decay? check"),  # (not optim.lr, by letters)
    ("model.n_layer=4", "did you mean model.depth? check"),
    ("train.max_steps=1000", "did you mean train.tokens (a run's length is counted in tokens)? "
                             "check"),
    ("schedule.warmup_steps=100", "did you mean schedule.warmup_tokens (counted in tokens)? "),
    ("train.widht=64", "did you mean model.width? check"),
    # a key in capitals (no letter off), a bool given a word (no fix said)
    ("OPTIM.LR=0.1", "unknown config key 'OPTIM': did you mean optim.lr (keys are lower "
                     "case)? check"),
    ("train.compile=maybe", "is not a valid bool (type str); train.compile takes true or "
                            "false, e.g. train.compile=true"),
    # values listed to try several: a sweep's grid axis
    ("optim.lr=[1e-3,2e-3]", "optim.lr takes one number: to sweep several, write "
                             "'optim.lr=choice(1e-3,2e-3)' (a grid axis of a sweep)"),
])
def test_bad_overrides_give_one_sentence(override, fragment):
    with pytest.raises(ConfigError) as err:
        compose([override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("schedule=null", "schedule=null: config group 'schedule' takes exactly one option: "
                      "choose one of constant, cosine, linear, power, wsd"),  # (a traceback)
    ("schedule=[wsd,cosine]", "config group 'schedule' takes exactly one option"),  # (merged)
    ("~model", "~model: config group 'model' takes exactly one option: choose one of "
               "gpt124m, small, tiny"),  # (the dataclass defaults, a model no option holds)
    ("+schedule=wsd", "+schedule=wsd: config group 'schedule' has an option already; choose "
                      "another without the +, e.g. schedule=wsd"),
])
def test_a_config_group_takes_exactly_one_option(override, fragment):
    from trainer.compose import Composer
    for composed in (compose, Composer()):  # (a sweep's trials are composed by the latter)
        with pytest.raises(ConfigError) as err:
            composed([override])
        assert err.value.problems == [fragment] or fragment in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, fragment", [
    (["optim.lr=0"], "optim.lr=0.0 must be > 0"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay=-0.1 must be >= 0"),
    # accepted, then trained with (tests by a stranger)
    (["optim.eps=-1"], "optim.eps=-1.0 must be > 0 and finite"),
    (["data.max_tokens=-5"], "data.max_tokens=-5 must be >= 0 (0 reads the whole source)"),
    (["schedule=power", "schedule.b=0.5"], "schedule.b=0.5 must be <= 0: the Power "
                                           "schedule's LR falls as tokens grow"),
    (["train.batch_size=16", "train.micro_batch_size=5"], "not divisible by train.micro_batch"),
    (["train.seq_len=2048"], "exceeds model.context_len=1024"),
    (["train.tokens=100"], "train.tokens=100 is less than one batch"),
    (["train.tokens=-16384"], "train.tokens=-16384 must be > 0: give the number of tokens"),
    (["seed=-1"], "seed=-1 must be a whole number from 0 to 2^63 - 1 (what torch.manual_seed "
                  "takes)"),
    ([f"seed={2 ** 64}"], f"seed={2 ** 64} must be a whole number from 0 to 2^63 - 1"),
    (["train.log_every_steps=0"], "train.log_every_steps=0 must be a whole number >= 1"),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints=0 must be a whole number >= 1"),
    # (both said "0: only at the end"; a run of checkpoint cadence 0 keeps none, at its end too)
    (["train.checkpoint_every_tokens=-1"], "train.checkpoint_every_tokens=-1 must be >= 0 (0: "
                                           "no checkpoints)"),
    (["train.eval_every_tokens=-1"], "train.eval_every_tokens=-1 must be >= 0 (0: an eval "
                                     "only at the end)"),
    (["train.eval_tokens=0"], "train.eval_tokens=0 is less than one sequence"),
    (["data=synthetic", "data.num_tokens=0"], "data.num_tokens=0 must be a positive number of "
                                               "tokens to generate"),
    (["model.width=100"], "model.width=100 is not divisible into heads"),
    (["data=files", "data.paths=[/no/such/file.jsonl]"], "/no/such/file.jsonl does not exist"),
    (["data=files"], "data.paths is empty"),
    (["data=hf"], "data.name is not set"),
    (["schedule.decay_shape=square"], "schedule.decay_shape='square' is not one of"),
    (["optim.timescale=0.2", "optim.weight_decay=0.1"], "both set"),
    # NaN and inf compared false with `<= 0` and passed: a NaN multiplier trained a run that
    # "diverged", and the fitter took it for a stability limit
    (["model.input_mult=nan"], "model.input_mult=nan must be > 0 and finite"),
    (["model.init_std=inf"], "model.init_std=inf must be > 0 and finite"),
    (["model.output_mult=nan"], "model.output_mult=nan must be > 0 and finite"),
    (["optim.weight_decay=nan"], "optim.weight_decay=nan must be >= 0 and finite"),
    (["optim.grad_clip=nan"], "optim.grad_clip=nan must be >= 0"),
    (["optim.timescale=inf"], "optim.timescale=inf must be > 0"),
    (["schedule.a=nan"], "schedule.a=nan must be > 0 and finite"),
    (["schedule=power", "schedule.b=nan"], "schedule.b=nan must be <= 0"),
    (["data=synthetic", "data.concentration=nan"], "data.concentration=nan must be > 0"),
])
def test_validation_names_key_and_fix(overrides, fragment):
    found = problems(compose(overrides), network=False)
    assert any(fragment in p for p in found), found


def test_a_negative_budget_is_one_problem_not_three():
    """Not also 'less than one batch' and 'warmup exceeds train.tokens'."""
    found = problems(compose(["train.tokens=-16384", "schedule.warmup_tokens=1024"]),
                     network=False)
    assert found == ["train.tokens=-16384 must be > 0: give the number of tokens to train on, "
                     "e.g. train.tokens=1_000_000"]


def test_valid_default_has_no_problems():
    assert problems(compose([]), network=False) == []


def test_validation_collects_every_problem():
    found = problems(compose(["optim.lr=-1", "train.tokens=10", "model.width=100"]),
                     network=False)
    keys = [p.split("=")[0] for p in found]
    # The default warmup fits even a budget of 10 tokens: it is no problem of the config.
    assert keys == ["model.width", "optim.lr", "train.tokens"]


def test_hub_dataset_without_network_is_reported_before_training(tmp_path):
    # A closed loopback port stands for "no network" whether or not this machine has one.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "PROXYSWEEP_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "trainer", "data=hf",
                           "data.name=roneneldan/TinyStories", f"storage_root={tmp_path}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: data.name=roneneldan/TinyStories needs the Hugging "
                                  "Face hub, which is unreachable")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing was written


def test_a_tracking_server_that_is_down_is_reported_before_training(tmp_path):
    """Else MLflow's client retries the refused connection for minutes after the run began."""
    proc = subprocess.run([sys.executable, "-m", "trainer", "model=tiny", "data=synthetic",
                           "tracking.uri=http://u:pw@127.0.0.1:9", f"storage_root={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: tracking.uri=http://u:***@127.0.0.1:9 cannot be reached: nothing listens on "
        "127.0.0.1:9 (connection refused); start the server, or leave tracking.uri unset to "
        "log to files only")
    assert not any(tmp_path.iterdir())


def test_a_storage_root_that_cannot_hold_runs_is_one_sentence(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for root, message in ((tmp_path / "a_file" / "runs", "is a file, not a folder"),
                          ("/proc/no/runs", "cannot write there")):
        proc = subprocess.run([sys.executable, "-m", "trainer", "model=tiny", "data=synthetic",
                               f"storage_root={root}"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_cli_user_error_is_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "trainer", "optim.lr=-1", "model.width=100"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "error: model.width=100 is not divisible into heads of model.head_dim=16: make the "
        "width a multiple of head_dim",
        "error: optim.lr=-1.0 must be > 0 and finite: give a positive learning rate",
    ]
    assert "Traceback" not in proc.stderr


def test_cli_prints_resolved_config():
    proc = subprocess.run([sys.executable, "-m", "trainer", "--cfg", "optim.lr=0.5"],
                          capture_output=True, text=True, check=True)
    assert "optim.lr=0.5" in proc.stdout.splitlines()
    from trainer.identity import config_id

    run_id = config_id(compose(["optim.lr=0.5"]))  # (its id and folder, which a user asks for)
    assert proc.stderr.strip().splitlines()[-1] == f"run id {run_id[:12]}: runs/{run_id}"


@pytest.mark.parametrize("overrides", [
    ["model=tiny", "optim.lr=0.001", "data.paths=[a,b]"],
    ["optim.lr=1e-3", "model.param=sp", "seed=3", "train.compile=true"],
    ["optim.timescale=0.2", "optim.lr=1"],
    ["data=hf", "data.name=x/y", "data.config_name=null"],
    ["schedule=wsd", "schedule.decay_shape=linear", "model.positions=learned"],
    ["data.cache_dir=${oc.env:HOME}/c"],  # an interpolation takes the full path
])
def test_composer_fast_path_equals_compose(overrides):
    from trainer.compose import Composer
    assert Composer()(overrides) == compose(overrides)


@pytest.mark.parametrize("override", ["optim.lrr=1", "model.width=abc", "seed=1.5",
                                      "model.param=xx", "+foo=1"])
def test_composer_reports_errors_like_compose(override):
    from trainer.compose import Composer
    with pytest.raises(ConfigError) as fast:
        Composer()([override])
    with pytest.raises(ConfigError) as full:
        compose([override])
    assert str(fast.value) == str(full.value)


def test_an_infinite_lr_and_an_empty_storage_root_are_refused_and_cfg_says_so(tmp_path):
    """optim.lr=inf ran (the Power schedule capped it, then it diverged); storage_root= put
    the run folders in the current folder; --cfg printed a config that cannot run, silently."""
    from trainer.validation import check

    cfg = compose(["optim.lr=inf", "storage_root="])
    assert "optim.lr=inf must be > 0 and finite: give a positive learning rate" in problems(cfg)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert "storage_root is empty: give the folder for the run directories, e.g. " \
           "storage_root=runs" in err.value.problems
    proc = subprocess.run([sys.executable, "-m", "trainer", "--cfg", "optim.lr=inf"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0 and "optim.lr=inf" in proc.stdout
    assert proc.stderr.strip().splitlines()[0] == (
        "note: this config cannot run: optim.lr=inf must be > 0 and finite: give a positive "
        "learning rate")
    # an empty storage_root, which a run refuses, was not said by --cfg
    proc = subprocess.run([sys.executable, "-m", "trainer", "--cfg", "storage_root="],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0 and proc.stderr.strip().splitlines()[0] == (
        "note: this config cannot run: storage_root is empty: give the folder for the run "
        "directories, e.g. storage_root=runs")


def test_a_file_listed_twice_and_mixed_types_are_said(tmp_path, monkeypatch):
    """The same file twice in data.paths trained at double weight, without a word; "mixes
    file types" named none."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("text " * 50)
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    assert problems(compose(["data=files", f"data.paths=[a.txt,{tmp_path / 'a.txt'}]"])) == [
        f"data.paths lists one file twice (a.txt and {tmp_path / 'a.txt'}): give each file "
        "once"]
    assert problems(compose(["data=files", "data.paths=[a.txt,b.jsonl]"])) == [
        "data.paths mixes file types (.jsonl, .txt): give files of one type"]


def test_data_paths_that_would_be_ignored_or_are_folders_are_one_sentence(tmp_path):
    """`data.paths` without data=files trained on the default corpus, silently; a folder was
    'does not exist'; a local path as a hub name was 'the hub is unreachable'."""
    (tmp_path / "a.txt").write_text("text")
    assert problems(compose([f"data.paths=[{tmp_path / 'a.txt'}]"])) == [
        "data.paths is set, but data.source=pystdlib reads no files: add data=files to train "
        "on them ('data=files' 'data.paths=[...]')"]
    bare = tmp_path / "bare"  # (a folder of data files stands for them: test_data_files.py)
    (bare / "sub").mkdir(parents=True)
    (bare / "README.md").write_text("about")
    assert problems(compose(["data=files", f"data.paths=[{bare}]"])) == [
        f"data.paths: the folder {bare} holds no .txt, .jsonl, .json, .parquet files; give "
        "the folder (or files) that hold the text"]
    saved = tmp_path / "saved"  # a dataset's save_to_disk folder: said what to do with it
    saved.mkdir()
    (saved / "dataset_info.json").write_text("{}")
    assert problems(compose(["data=files", f"data.paths=[{saved}]"])) == [
        f"data.paths: {saved} is a dataset saved with save_to_disk; write it as parquet "
        "(datasets.load_from_disk(PATH).to_parquet('data.parquet')) and give that file"]
    (tmp_path / "empty.jsonl").write_text("")
    assert problems(compose(["data=files", f"data.paths=[{tmp_path / 'empty.jsonl'}]"])) == [
        f"data.paths: {tmp_path / 'empty.jsonl'} is empty; give files that hold text"]
    assert problems(compose(["data=hf", f"data.name={tmp_path / 'a.txt'}"])) == [
        f"data.name={tmp_path / 'a.txt'} is a local path, not a hub dataset: use data=files "
        f"'data.paths=[{tmp_path / 'a.txt'}]' (its eval split is held out of them: "
        "data.holdout_fraction)"]
    # a path where nothing is (it offered data=files with that path, which failed next)
    assert problems(compose(["data=hf", f"data.name={tmp_path / 'gone'}"])) == [
        f"data.name={tmp_path / 'gone'} is a local path, not a hub dataset, and nothing is "
        "there: give a hub dataset's name (e.g. data.name=roneneldan/TinyStories), or your "
        "files with data=files 'data.paths=[FILE_OR_FOLDER]'"]
    # a DatasetDict's folder, and a save_to_disk folder or a folder of files as data.name:
    # each sent to data=files with the folder, which that then refused
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
    said = ("is a DatasetDict saved with save_to_disk; write its splits as parquet (for name, "
            "split in datasets.load_from_disk(PATH).items(): split.to_parquet(f'{name}."
            "parquet')) and give them: data=files 'data.paths=[train.parquet]' "
            "'data.val_paths=[validation.parquet]' (or without data.val_paths, eval is held "
            "out of data.paths: data.holdout_fraction)")
    assert problems(compose(["data=files", f"data.paths=[{splits}]"])) == [
        f"data.paths: {splits} {said}"]
    assert problems(compose(["data=hf", f"data.name={splits}"])) == [
        f"data.name={splits} is a local path, not a hub dataset: it {said}"]
    assert problems(compose(["data=hf", f"data.name={saved}"]))[0].endswith(
        "it is a dataset saved with save_to_disk; write it as parquet (datasets.load_from_"
        "disk(PATH).to_parquet('data.parquet')) and give that file")
    assert problems(compose(["data=hf", f"data.name={tmp_path}"])) == [
        f"data.name={tmp_path} is a local path, not a hub dataset: use data=files "
        f"'data.paths=[{tmp_path}]' (its eval split is held out of them: "
        "data.holdout_fraction)"]
    # a folder laid out as on the hub: its training split's files (it said `a.jsonl`, which
    # the folder did not hold), as a pattern
    hub = tmp_path / "myhub" / "data"
    hub.mkdir(parents=True)
    for name in ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet",
                 "validation-00000-of-00001.parquet"):
        (hub / name).write_bytes(b"")
    train = hub / "train-*.parquet"
    assert problems(compose(["data=hf", f"data.name={tmp_path / 'myhub'}"])) == [
        f"data.name={tmp_path / 'myhub'} is a local path, not a hub dataset: use data=files "
        f"'data.paths=[{train}]' 'data.val_paths=[{hub / 'validation-00000-of-00001.parquet'}]'"]


def test_a_batch_of_nothing_hides_no_other_problem():
    """train.batch_size=0 returned at once, naming seq_len too, and hid a seq_len over the
    context (and everything else said of train.*)."""
    from trainer.validation import problems

    found = problems(compose(["train.batch_size=0", "train.seq_len=4096",
                              "train.eval_tokens=0"]))
    assert "train.batch_size=0 must be a whole number >= 1" in found
    assert any(p.startswith("train.seq_len=4096 exceeds model.context_len=1024") for p in found)
    assert any(p.startswith("train.eval_tokens=0 is less than one sequence") for p in found)
    assert not any("train.seq_len=4096 must" in p for p in found)


def test_a_store_in_a_folder_that_does_not_exist_is_noted(tmp_path):
    """`tracking.uri=sqlite:////nonexistent/dir/x.db` made that folder without a word."""
    from trainer.validation import notes

    uri = f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.db'}"
    assert (f"tracking.uri: the folder {tmp_path / 'no' / 'dir'} does not exist, and the store "
            "is created there with it; check the path if that is not meant") in notes(
        compose([f"tracking.uri={uri}"]))
    assert not [n for n in notes(compose([f"tracking.uri=sqlite:///{tmp_path / 'x.db'}"]))
                if n.startswith("tracking.uri")]
