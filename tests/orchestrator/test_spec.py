"""Spec loading, grid expansion and validation: no Ray, no MLflow."""

import pytest

from orchestrator.extend import extended
from orchestrator.spec import Resources
from orchestrator.spec_file import load_spec, spec_from_dict
from orchestrator.trials import expand
from trainer.errors import ConfigError

BASE = {"name": "t", "overrides": ["model=tiny", "data=synthetic", "train.tokens=65536",
                                    "schedule.warmup_tokens=0"],
        "grid": {"optim.lr": "tag(log, choice(1e-3, 3e-3, 1e-2))",
                 "train.batch_size": "choice(8, 16)"},
        "seeds": [0, 1]}


def test_grid_is_the_cartesian_product_times_seeds():
    trials = expand(spec_from_dict(BASE))
    assert len(trials) == 3 * 2 * 2
    assert len({t.trial_id for t in trials}) == 12
    assert {t.cfg.optim.lr for t in trials} == {1e-3, 3e-3, 1e-2}
    assert trials[0].overrides == ("optim.lr=0.001", "train.batch_size=8", "seed=0")


def test_range_and_yaml_list_axes():
    spec = spec_from_dict({**BASE, "grid": {"model.depth": "range(1, 4)",
                                            "train.batch_size": [8, 16]}})
    assert sorted({(t.cfg.model.depth, t.cfg.train.batch_size) for t in expand(spec)}) == [
        (d, b) for d in (1, 2, 3) for b in (8, 16)]


def test_command_line_overrides_set_axes_and_base():
    spec = spec_from_dict(BASE).with_overrides(["train.batch_size=choice(32)",
                                                "optim.weight_decay=0.1"])
    trials = expand(spec)
    assert {t.cfg.train.batch_size for t in trials} == {32}
    assert all(t.cfg.optim.weight_decay == 0.1 for t in trials)


@pytest.mark.parametrize("override, where", [
    ("fuse=off", r"write it in the spec file and launch that \(nothing done trains again\), "
                 "or give --fuse off"),
    ("share_prefix=false", r"write it .*, or give --no-share"),
    ("retries=3", r"write it in the spec file and launch that \(nothing done trains again\)"),
    ("resources.gpus=1", r"write it in the spec file and launch that \(nothing done trains "
                         r"again\)"),
    ("max_concurrent=2", r"write it .*, or give --max-concurrent 2")])
def test_a_spec_key_given_as_an_override_says_where_it_goes(override, where):
    """`fuse=off` on the command line is not a trainer config key: the error says so and
    where it belongs, rather than calling it an unknown config key."""
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=f"sets the sweep spec's `{key.split('.')[0]}`, not "
                                          f"the trainer's config: {where}$"):
        spec_from_dict(BASE).with_overrides(["optim.lr=1e-3", override])
    with pytest.raises(ConfigError, match="sets the sweep spec's"):
        extended(spec_from_dict(BASE), [override])


@pytest.mark.parametrize("key, value, fragment", [
    ("seeds", 3, "seeds=3: give a list of whole numbers from 0 to 2^63 - 1, e.g. seeds: [3] "
                 "for seed 3, or seeds: [0, 1, 2]"),
    ("seeds", [-1, 0], "seeds=[-1, 0]: give a list of whole numbers from 0 to 2^63 - 1"),
    ("seeds", [2 ** 64], f"seeds=[{2 ** 64}]: give a list of whole numbers from 0 to 2^63 - 1"),
    ("seeds", [], "seeds=[]: give a list"),
    ("seeds", [0, 0, 1], "seeds=[0, 0, 1]: seed 0 is given twice (a seed is one trial per "
                         "point); give each seed once"),
    ("max_concurrent", 0, "max_concurrent=0: give a whole number >= 1, or null"),
    ("retries", -1, "retries=-1: give a whole number >= 0"),
    ("share_prefix", "maybe", "share_prefix='maybe' must be true or false"),
    ("share_prefix", 1, "share_prefix=1 must be true or false"),
])
def test_bad_sweep_level_values_are_refused_before_anything_runs(key, value, fragment):
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, key: value})
    assert any(fragment in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("value, share", [("yes", True), ("Off", False), (" on ", True),
                                          ("no", False), (False, False)])
def test_share_prefix_takes_the_words_fuse_takes(value, share):
    # ('yes' quoted was refused here while `fuse: 'yes'` was taken)
    assert spec_from_dict({**BASE, "share_prefix": value}).share_prefix is share


def test_extend_adds_values_to_an_axis_and_keeps_old_trials():
    spec = spec_from_dict(BASE)
    bigger = extended(spec, ["optim.lr=choice(3e-2)"])
    old = {t.trial_id for t in expand(spec)}
    new = {t.trial_id for t in expand(bigger)}
    assert old < new and len(new - old) == 4
    assert bigger.grid["optim.lr"] == "tag(log, choice(0.001, 0.003, 0.01, 0.03))"  # tag kept


def test_extend_adds_seeds_and_keeps_the_trials_of_a_new_axis_value_they_had():
    spec = spec_from_dict(BASE)
    old = {t.trial_id for t in expand(spec)}
    more = extended(spec, ["seeds=[1,2]"])
    assert more.seeds == (0, 1, 2) and old < {t.trial_id for t in expand(more)}
    # a new axis holds the value the trials had (0.0), so they stay in the sweep
    decay = extended(spec, ["optim.weight_decay=choice(0.1)"])
    assert decay.grid["optim.weight_decay"] == "choice(0.0, 0.1)"
    trials = {t.trial_id for t in expand(decay)}
    assert old < trials and len(trials) == 2 * len(old)
    assert extended(spec, ["optim.weight_decay=choice(0, 0.1)"]).grid[
        "optim.weight_decay"] == "choice(0, 0.1)"  # the value already there


@pytest.mark.parametrize("args, message", [
    (["optim.lr=1e-2"], "optim.lr=1e-2: optim.lr is an axis of sweep t and extend adds values "
                         "to it: give 'optim.lr=choice(1e-2)'"),
    (["seed=choice(0,1)"], "seed=choice(0,1): a sweep's trials take their seed from its "
                           "`seeds` list; give seeds=[0,1] (sweep extend adds them)"),
    (["seed=3"], "seed=3: a sweep's trials take their seed from its `seeds` list; give "
                 "seeds=[3] (sweep extend adds them)"),
    # (a list given to `seed` was said back as seeds=[[0,1]], which is refused in turn)
    (["seed=[0,1]"], "seed=[0,1]: a sweep's trials take their seed from its `seeds` list; "
                     "give seeds=[0,1] (sweep extend adds them)"),
    (["seeds=[-1]"], "seeds=[-1]: give a list of whole numbers from 0 to 2^63 - 1, e.g. "
                     "seeds=[0,1,2]"),
    ([f"seeds=[{2 ** 64}]"], f"seeds=[{2 ** 64}]: give a list of whole numbers from 0 to "
                             "2^63 - 1, e.g. seeds=[0,1,2]"),
    (["=choice(1,2)"], "=choice(1,2): an override needs a key, e.g. optim.lr=1e-3"),
    (["seeds=3"], "seeds=3: give a list: seeds=[3] for seed 3, or seeds=[0,1,2] for three "
                  "seeds"),
])
def test_extend_refuses_what_would_drop_trials_or_be_ignored(args, message):
    with pytest.raises(ConfigError) as err:
        extended(spec_from_dict(BASE), args)
    assert err.value.problems == [message]


def test_extend_refuses_a_plain_value_that_would_replace_every_trial():
    """`extend` adds: `schedule=cosine` or a new base value of a key that is no axis changed
    every trial, so that none of the sweep's finished trials was in it any more."""
    spec = spec_from_dict({**BASE, "storage_root": "/data/runs"})
    with pytest.raises(ConfigError) as err:
        extended(spec, ["schedule=cosine", "optim.weight_decay=0.1", "storage_root=/elsewhere"])
    assert err.value.problems == [
        "schedule=cosine: every trial of sweep t has schedule=power, and extend only adds "
        "trials (this would replace them all): give 'schedule=choice(power, cosine)' to add "
        "it as an axis, or launch a new sweep (another name)",
        "optim.weight_decay=0.1: every trial of sweep t has optim.weight_decay=0.0, and "
        "extend only adds trials (this would replace them all): give "
        "'optim.weight_decay=choice(0.0, 0.1)' to add it as an axis, or launch a new sweep "
        "(another name)",
        "storage_root=/elsewhere: sweep t keeps its runs under /data/runs, and extend adds to "
        "them there; launch a new sweep (another name) for another storage_root"]
    # The value the trials already have is no change, nor is what no trial id reads (a
    # logging cadence), nor the same folder spelt otherwise.
    same = extended(spec, ["optim.weight_decay=0.0", "storage_root=/data/runs/",
                           "train.log_every_steps=5", "optim.lr=choice(3e-2)"])
    assert {t.trial_id for t in expand(spec)} < {t.trial_id for t in expand(same)}
    with pytest.raises(ConfigError) as err:  # a key at null says null
        extended(spec, ["optim.timescale=100"])
    assert err.value.problems[0].startswith(
        "optim.timescale=100: every trial of sweep t has optim.timescale=null, and extend only "
        "adds trials (this would replace them all): give 'optim.timescale=choice(null, 100)'")


def test_seed_in_the_grid_or_overrides_is_refused_for_seeds():
    """The spec's `seeds` set every trial's seed last: a `seed` axis was silently ignored."""
    for change in ({"grid": {**BASE["grid"], "seed": "choice(0, 1)"}},
                   {"overrides": [*BASE["overrides"], "seed=3"]}):
        with pytest.raises(ConfigError, match=r"`seed` in `(grid|overrides)` is overridden by "
                           r"the spec's `seeds`"):
            spec_from_dict({**BASE, **change})


@pytest.mark.parametrize("change, fragment", [
    ({"grid": {}}, "grid is empty"),
    ({"name": None}, "has no `name`"),
    ({"grdi": {}}, "unknown key 'grdi'"),
    ({"grid": {"optim.lr": "choice(1e-3"}}, "grid.optim.lr: cannot parse 'choice(1e-3'"),
    ({"grid": {"optim.lr": "interval(1e-4, 1e-2)"}}, "interval() has no grid points"),
    ({"grid": {"optim.lrr": "choice(1, 2)"}}, "unknown config key 'optim.lrr'"),
    ({"grid": {"optim.lr": "choice(-1, 1e-3)"}}, "optim.lr=-1.0 must be > 0"),
    ({"resources": {"gpu": 1}}, "unknown key 'resources.gpu'"),
])
def test_bad_specs_are_reported_before_anything_runs(change, fragment):
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, **change}))
    assert fragment in str(err.value)


def test_all_problems_are_collected():
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "grid": {"optim.lr": "choice(-1, 1e-3)",
                                                "train.tokens": "choice(10, 65536)"}}))
    text = str(err.value)
    assert "optim.lr=-1.0 must be > 0 and finite: give a positive learning rate (4 trials)" in text
    assert "train.tokens=10 is less than one batch" in text
    # with a misspelt spec key too: its sentence and the trials' problems, in one round (the
    # grid's were said only once the key was fixed)
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, "retry": 3, "grid": {"optim.lr": "choice(-1, 1e-3)",
                                                     "train.tokens": "choice(10, 65536)"}})
    assert err.value.problems[0].startswith("spec: unknown key 'retry'; did you mean `retries`?")
    assert any(p.startswith("optim.lr=-1.0 must be > 0") for p in err.value.problems)
    assert any(p.startswith("train.tokens=10 is less than one batch") for p in err.value.problems)


def test_yaml_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ngrid:\n  optim.lr: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}:4:1: YAML error")
    # A key given twice: PyYAML kept the last without a word.
    path.write_text("name: x\nfuse: 4\ngrid:\n  optim.lr: choice(1e-3)\n  optim.lr: "
                    "choice(1e-2)\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value) == (f"{path}:5:3: YAML error, key 'optim.lr' is given twice in one "
                              "mapping (keep one); fix the file there")
    # a merge key's keys given again explicitly are an override, not a mistake
    path.write_text("name: x\noverrides: &base [model=tiny]\nresources: {<<: {cpus: 1, "
                    "gpus: 0}, cpus: 2}\ngrid:\n  optim.lr: choice(1e-3)\n")
    assert load_spec(path).resources.cpus == 2
    # a binary file given as the spec, or a control character in one: a traceback before
    path.write_bytes(b"name: x\n\xd0\xcf\x11\xe0")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value) == (f"sweep spec {path} is not a text file (UTF-8 YAML): give the "
                              "path of a sweeps/*.yaml")
    path.write_text("name: x\x01\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value) == (f"{path}: YAML error, unacceptable character #x0001: special "
                              "characters are not allowed; fix the file there")


@pytest.mark.parametrize("name", ["demo", "lr_bs_tokens", "mup_width", "weight_decay"])
def test_shipped_sweeps_expand(name):
    from pathlib import Path
    spec = load_spec(Path(__file__).parents[2] / "sweeps" / f"{name}.yaml")
    assert spec.name == name and len(expand(spec)) >= 6


def test_multi_process_trials_take_whole_gpus_or_none(tmp_path):
    with pytest.raises(ConfigError) as err:
        spec_from_dict({"name": "x", "grid": {"optim.lr": "choice(1e-3)"},
                        "resources": {"gpus": 0.5, "world_size": 2}})
    assert "resources.gpus=0.5 with world_size=2" in str(err.value)
    assert Resources(gpus=1, cpus=2, world_size=4).per_trial() == Resources(4, 8, 4)


def test_cuda_trials_need_gpus_from_ray_but_not_on_the_driver(tmp_path):
    """A trial that asks for CUDA must be given a GPU by Ray; the driver itself needs none
    (it may run on a CPU head node: this machine has no GPU)."""
    grid = {"optim.lr": "choice(1e-3, 3e-3)"}
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({"name": "x", "grid": grid, "overrides": ["train.device=cuda"],
                               "storage_root": str(tmp_path)}))
    assert ("train.device=cuda with resources.gpus: 0: Ray gives the trial no GPU; set "
            "resources.gpus") in str(err.value)
    trials = expand(spec_from_dict({"name": "x", "grid": grid, "storage_root": str(tmp_path),
                                    "overrides": ["train.device=cuda"],
                                    "resources": {"gpus": 0.5}}))
    assert [t.cfg.train.device for t in trials] == ["cuda", "cuda"]
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({"name": "x", "grid": grid, "storage_root": str(tmp_path),
                               "overrides": ["train.device=cuda:1"],
                               "resources": {"gpus": 1}}))
    assert "train.device=cuda:1: in a sweep Ray picks each trial's GPUs" in str(err.value)


def test_a_stored_spec_an_earlier_version_launched_stays_readable():
    """`max_concurrent: 0` and `retries: -1` ran before they were refused (as no cap and no
    retry): the stored copy of such a sweep still reads, for status, resume and extend."""
    raw = {**BASE, "max_concurrent": 0, "retries": -1}
    with pytest.raises(ConfigError):
        spec_from_dict(raw)
    stored = spec_from_dict(raw, stored=True)
    assert stored.max_concurrent is None and stored.retries == 0


@pytest.mark.parametrize("change, problem", [
    ({"resources": {"gpus": "one"}}, "resources.gpus='one': give a number >= 0"),
    ({"resources": {"cpus": None}}, "resources.cpus=None: give a number >= 0"),
    ({"resources": {"cpus": -1}}, "resources.cpus=-1: give a number >= 0"),
    ({"resources": "lots"}, "resources='lots': give a mapping, e.g. resources: {gpus: 0.25"),
    ({"resources": {"cpus": 0}}, "resources.cpus=0 with no GPU: such trials would hold "
                                 "nothing and all run at once"),
    ({"resources": {"world_size": True}}, "resources.world_size=True must be a whole number"),
    ({"storage_root": ""}, "storage_root='': give the folder for the trials' run directories"),
    ({"storage_root": None}, "storage_root=null: give the folder"),  # (as YAML writes it)
    ({"name": "../.."}, "name='../..': a sweep's name also names its folders"),
    ({"name": "a/b"}, "name='a/b': a sweep's name also names its folders"),
    ({"name": "x" * 300}, f"name={'x' * 40!r}... is 300 bytes long: a sweep's name also names "
                          "its MLflow experiment and folders; give one of at most 200 bytes"),
    ({"name": "é" * 101}, "is 202 bytes long"),
    ({"overrides": "model=tiny, data=synthetic"}, "overrides='model=tiny, data=synthetic': "
                                                  "give a list"),
    ({"overrides": ["model=tiny", "optim.lr=choice(1e-3, 1e-2)"]},
     "overrides: optim.lr=choice(1e-3, 1e-2) is a sweep expression; move it to grid "
     "(optim.lr: choice(1e-3, 1e-2))"),
    ({"overrides": ["model=tiny", "train.world_size=2"]},
     "overrides: train.world_size=2: a sweep sets each trial's train.world_size from "
     "resources.world_size"),
    ({"grid": {"optim.lr": None}}, "grid.optim.lr has no values"),
    # One run_dir for every trial: each found the first trial's summary there as its own,
    # and the sweep recorded one result four times.
    ({"overrides": ["model=tiny", "run_dir=/tmp/one"]},
     "overrides: run_dir=/tmp/one: a sweep gives each trial its own folder"),
    ({"grid": {"optim.lr": "choice(1e-3)", "checkpoint_dir": "choice(/a, /b)"}},
     "grid.checkpoint_dir: a sweep gives each trial its own folder"),
    # "did you mean checkpoint_dir?" pointed at a key the sweep then refused in turn
    ({"overrides": ["model=tiny", "train.checkpoint_dir=/tmp/c"]},
     "overrides: train.checkpoint_dir=/tmp/c: there is no config key train.checkpoint_dir; "
     "the nearest, checkpoint_dir, is the sweep's: a sweep gives each trial its own folder"),
    ({"grid": {"optim.lr": "choice(1e-3)", "model.world_size": "choice(1, 2)"}},
     "grid.model.world_size: there is no config key model.world_size; the nearest, "
     "train.world_size, is the sweep's: a sweep sets each trial's train.world_size from "
     "resources.world_size"),
    # Dropped for the spec's defaults without a word:
    ({"overrides": ["storage_root=/tmp/x"]}, "overrides: storage_root=/tmp/x: the trials' "
                                             "folder is the spec's own key"),
    ({"overrides": ["tracking.uri=sqlite:///x.db"]},
     "tracking.uri=sqlite:///x.db: a sweep records every trial in its own store: give "
     "--tracking-uri"),
    ({"grid": "optim.lr=choice(1e-3,1e-2)"}, "grid='optim.lr=choice(1e-3,1e-2)': give a "
                                             "mapping of config key to values"),
    ({"grid": {"optim": {"lr": "choice(1e-3)"}}}, "grid.optim: give dotted keys"),
])
def test_spec_values_of_the_wrong_kind_are_one_sentence_each(change, problem):
    """Each was a traceback, a silent default or trials run wrong (tests by a stranger)."""
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, **change})
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_grid_and_command_line_mistakes_are_one_sentence(tmp_path):
    from orchestrator.trials import grid_axes

    _, problems = grid_axes(spec_from_dict({**BASE, "grid": {"optim.lr": "range(0, 1, 0)"}}))
    assert problems == ["grid.optim.lr: 'range(0, 1, 0)' (range() arg 3 must not be zero); "
                        "give a step that is not 0"]
    for expr, problem in [
            ("glob(*)", "glob() is not supported in a sweep; list the values"),
            ("tag(lg, choice(1e-3))", "unknown tag 'lg' in 'tag(lg, choice(1e-3))'; the one "
                                      "tag is log"),
            # a user's span of learning rates that Hydra's range steps over by 1
            ("tag(log, range(1e-4, 1e-1))", "'tag(log, range(1e-4, 1e-1))' has one value "
                                            "(0.0001: range steps by 1); list the values")]:
        _, problems = grid_axes(spec_from_dict({**BASE, "grid": {"optim.lr": expr}}))
        assert [p.partition(": ")[2][:len(problem)] for p in problems] == [problem]
    assert grid_axes(spec_from_dict({**BASE, "grid": {"x": "range(1, 3)"}}))[1] == []
    for expr in ("tag(lin, choice(1e-3))", "range(1e-3, 1e-2)"):  # launched before the check
        axes, problems = grid_axes(spec_from_dict({**BASE, "grid": {"optim.lr": expr}},
                                                  stored=True))
        assert problems == [] and len(axes["optim.lr"]) == 1
    spec = spec_from_dict(BASE)
    with pytest.raises(ConfigError, match="one checkpoint_dir for all would mix them"):
        spec.with_overrides(["checkpoint_dir=/tmp/c"])
    with pytest.raises(ConfigError, match=r"optim.lr=choice\(1e-3: cannot parse it"):
        spec.with_overrides(["optim.lr=choice(1e-3"])  # (it dropped the axis)
    with pytest.raises(ConfigError, match=r"write e.g. train.tokens=VALUE, or "
                                          r"'train.tokens=choice\(A, B\)' for a grid axis"):
        spec.with_overrides(["train.tokens=choice("])  # (its example named optim.lr)
    with pytest.raises(ConfigError, match="from resources.world_size; give that in the spec"):
        spec.with_overrides(["train.world_size=2"])
    assert spec.with_overrides([f"storage_root={tmp_path}"]).storage_root == str(tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        expand_root = spec_from_dict({**BASE, "storage_root": str(tmp_path / "a_file" / "r")})
        from orchestrator.driver import prepare
        prepare(expand_root)


def test_every_override_that_does_not_compose_is_said_at_once():
    """Hydra stops at the first: a user fixed one typo per launch."""
    raw = {**BASE, "overrides": [*BASE["overrides"], "optim.bogus=1", "train.tokens=abc"]}
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict(raw))
    assert [p.split(":")[0] for p in err.value.problems] == [
        "unknown config key 'optim.bogus'", "bad value for 'train.tokens' in override "
        "'train.tokens=abc'"]
    raw = {**BASE, "grid": {"optim.lrr": "choice(1e-3)", "optim.lr": "choice(abc)"}}
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict(raw))
    assert len(err.value.problems) == 2
    assert err.value.problems[0].endswith("(grid.optim.lrr)")
    assert err.value.problems[1].endswith("(grid.optim.lr)")


def test_extend_with_a_misspelt_key_says_so_not_that_it_is_a_new_axis():
    from orchestrator.extend import extended

    with pytest.raises(ConfigError) as err:
        extended(spec_from_dict(BASE), ["model.widht=choice(32, 64)"])
    assert err.value.problems == [
        "model.widht=choice(32, 64): unknown config key 'model.widht': did you mean "
        "model.width? check its spelling against conf/ (python -m trainer --cfg prints every "
        "key)"]
    with pytest.raises(ConfigError) as err:  # a config group is a key, not a misspelling
        extended(spec_from_dict(BASE), ["schedule=choice(power, wsd)"])
    assert "a new axis of sweep t; give its current value too" in str(err.value)


def test_a_command_s_flags_are_its_own_and_not_stored_with_the_spec():
    # `sweep resume NAME --no-share` once stored share_prefix: false, and every later
    # extend trained its new budgets from scratch.
    spec = spec_from_dict({**BASE, "fuse": 2})
    flagged = spec.with_flag("share_prefix", False).with_flag("fuse", False)
    assert (flagged.share_prefix, flagged.fuse) == (False, False)
    assert flagged.to_dict() == spec.to_dict()  # what the launch stores
    assert spec_from_dict(flagged.to_dict(), stored=True) == spec
    again = flagged.with_flag("fuse", 4)  # a second flag on the same key keeps the spec's
    assert again.fuse == 4 and again.to_dict()["fuse"] == 2


@pytest.mark.parametrize("change, problem", [
    ({"overrides": [*BASE["overrides"], "schedule=cosine"],
      "grid": {"optim.lr": "choice(1e-3)", "schedule.decay_fraction": "choice(0.1, 0.2)"}},
     "grid.schedule.decay_fraction: choice(0.1, 0.2): schedule=cosine has no final decay "
     "phase (only power and wsd do); it would only change the trial ids"),
    ({"overrides": [*BASE["overrides"], "schedule=wsd", "schedule.decay_fraction=0"],
      "grid": {"optim.lr": "choice(1e-3)", "schedule.decay_shape": "choice(linear, cosine)"}},
     "grid.schedule.decay_shape: choice(linear, cosine): schedule.decay_fraction=0 leaves "
     "schedule=wsd no final decay to shape; it would only change the trial ids"),
    ({"overrides": [*BASE["overrides"], "model.param=sp"],
      "grid": {"optim.lr": "choice(1e-3)", "model.base_width": "choice(16, 32)"}},
     "grid.model.base_width: choice(16, 32): model.param=sp does not read it"),
    ({"overrides": [*BASE["overrides"], "schedule=wsd", "schedule.a=5.0"]},
     "overrides: schedule.a=5.0: schedule=wsd does not read it (only power does)"),
    ({"grid": {"optim.lr": "choice(1e-3)", "data.vocab_size": "choice(16, 32)"},
      "overrides": [o for o in BASE["overrides"] if not o.startswith("data=")]},
     "grid.data.vocab_size: choice(16, 32): data=pystdlib does not read it"),
    # (each norm-test setting under a constant batch trained the same model twice)
    ({"grid": {"optim.lr": "choice(1e-3)", "train.norm_test_every": "choice(10, 20)"}},
     "grid.train.norm_test_every: choice(10, 20): train.batch_schedule=constant does not "
     "read it (only norm_test does)"),
    ({"grid": {"optim.lr": "choice(1e-3)", "data.text_field": "choice(body, content)"},
      "overrides": [o for o in BASE["overrides"] if not o.startswith("data=")]},
     "grid.data.text_field: choice(body, content): data=pystdlib does not read it"),
])
def test_a_key_no_trial_reads_is_refused_rather_than_trained_again_under_new_ids(change,
                                                                                 problem):
    """Each value of such an axis trained the same model (tests by a stranger)."""
    from orchestrator.trials import unread_problems

    spec = spec_from_dict({**BASE, **change})
    problems = unread_problems(spec)
    assert any(p.startswith(problem) for p in problems), problems
    assert unread_problems(spec, baseline=spec) == []  # launched before the check: resumable
    assert expand(spec)


def test_a_key_no_trial_reads_set_to_the_value_it_has_anyway_is_not_refused():
    """`model.base_width=64` (model=tiny's own) on an SP spec changes no id, and was refused
    as "it would only change the trial ids" (a stranger turning a muP spec into SP)."""
    from orchestrator.trials import unread_problems

    sp = [*BASE["overrides"], "model.param=sp"]
    from trainer.compose import Composer

    default = Composer()([*sp]).model.base_width
    same = spec_from_dict({**BASE, "overrides": [*sp, f"model.base_width={default}"]})
    assert unread_problems(same) == []
    assert expand(same)[0].trial_id == expand(spec_from_dict({**BASE, "overrides": sp}))[
        0].trial_id
    other = spec_from_dict({**BASE, "overrides": [*sp, f"model.base_width={default * 2}"]})
    assert unread_problems(other) == [
        f"overrides: model.base_width={default * 2}: model.param=sp does not read it (only "
        "mup does); it would only change the trial ids (the same model trained under another "
        "id, once per value): remove it"]


def test_a_key_read_at_some_points_of_the_grid_is_kept():
    from orchestrator.trials import unread_problems

    raw = {**BASE, "grid": {"optim.lr": "choice(1e-3)", "schedule": "choice(wsd, cosine)",
                            "schedule.decay_fraction": "choice(0.1, 0.2)"}}
    assert unread_problems(spec_from_dict(raw)) == []  # (wsd reads it)
    raw = {**BASE, "overrides": [*BASE["overrides"], "schedule=wsd",
                                 "schedule.decay_shape=linear"],
           "grid": {"optim.lr": "choice(1e-3)", "schedule.decay_fraction": "choice(0.0, 0.2)"}}
    assert unread_problems(spec_from_dict(raw)) == []  # (read where the decay is 0.2)
    raw = {**BASE, "overrides": [*BASE["overrides"], "train.max_batch_size=64"],
           "grid": {"optim.lr": "choice(1e-3)",
                    "train.batch_schedule": "choice(constant, norm_test)"}}
    assert unread_problems(spec_from_dict(raw)) == []  # (norm_test reads it)
    # the axis that makes it read after a long one: every combination of the deciding axes
    # is judged, not the grid's first points (which all had schedule=constant)
    lrs = "choice(" + ", ".join(f"{1e-4 * 1.1 ** i:.6g}" for i in range(70)) + ")"
    raw = {**BASE, "overrides": [*BASE["overrides"], "schedule.decay_fraction=0.2"],
           "grid": {"schedule": "choice(constant, wsd)", "optim.lr": lrs}}
    assert unread_problems(spec_from_dict(raw)) == []


@pytest.mark.parametrize("change, expected", [
    ({"grid": {**BASE["grid"], "seed": "choice(3, 5)"}},
     "spec: `seed` in `grid` is overridden by the spec's `seeds` (each trial takes one of "
     "them): write seeds: [3, 5] instead"),
    ({"overrides": [*BASE["overrides"], "seed=7"]},
     "spec: `seed` in `overrides` is overridden by the spec's `seeds` (each trial takes one of "
     "them): write seeds: [7] instead"),
    ({"grid": {**BASE["grid"], "seed": "interval(0, 10)"}},  # (no list: the example)
     "spec: `seed` in `grid` is overridden by the spec's `seeds` (each trial takes one of "
     "them): write seeds: [0, 1] instead"),
])
def test_a_seed_axis_is_refused_with_the_seeds_it_named(change, expected):
    # (it always said seeds: [0, 1])
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, **change})
    assert expected in err.value.problems


def test_a_key_set_twice_in_the_overrides_is_said():
    # `model.init_std=-0.08 ... model.init_std=inf`: the first, which would have been refused,
    # was dropped without a word (a key twice in a YAML mapping already was an error)
    from orchestrator.spec import shadowed_overrides

    raw = {**BASE, "overrides": [*BASE["overrides"], "model.init_std=0.1",
                                 "model.init_std=0.2", "+model.init_std=0.3"]}
    assert shadowed_overrides(spec_from_dict(raw)) == [
        "overrides set model.init_std 3 times (model.init_std=0.1, model.init_std=0.2, "
        "+model.init_std=0.3): every trial takes the last; keep one"]
    # a value given on the command line replaces the base's, and a sweep of it too
    spec = spec_from_dict({**BASE, "overrides": [*BASE["overrides"], "model.init_std=0.1"]})
    assert shadowed_overrides(spec) == []
    assert "model.init_std=0.1" not in spec.with_overrides(["model.init_std=0.2"]).overrides
    swept = spec.with_overrides(["model.init_std=choice(0.1, 0.2)"])
    assert not [o for o in swept.overrides if o.startswith("model.init_std")]
    assert swept.grid["model.init_std"] == "choice(0.1, 0.2)"
    assert shadowed_overrides(swept) == []


def test_a_world_size_problem_of_a_sweep_names_the_key_the_spec_sets():
    # "not divisible by train.world_size=3": a key the sweep refuses in its overrides
    raw = {**BASE, "resources": {"world_size": 3}}
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict(raw))
    assert err.value.problems[0].startswith(
        "train.batch_size=8 is not divisible by resources.world_size=3: each rank takes an "
        "equal share of the batch")


def test_a_misspelt_key_is_said_once_with_where_it_is():
    """A misspelt grid key was counted once per value as `(3 trials)` (in an 18-trial grid);
    a misspelt override did not say it was one."""
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "grid": {**BASE["grid"],
                                                "optim.weight_decy": "choice(0.0, 0.1, 0.2)"}}))
    (problem,) = err.value.problems
    assert problem.startswith("unknown config key 'optim.weight_decy'")
    assert problem.endswith("(grid.optim.weight_decy)")
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "overrides": [*BASE["overrides"], "optim.lrr=0.01"]}))
    (problem,) = err.value.problems
    assert problem.startswith("unknown config key 'optim.lrr'") and problem.endswith(
        "(overrides)")
    # a bad base value and a misspelt axis: both (the axis was said once the base was fixed),
    # and an axis of a group the base chose (schedule=wsd) is no problem
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "overrides": [*BASE["overrides"], "schedule=wsd",
                                                     "train.batch_size=abc"],
                               "grid": {"optim.lrr": "choice(1, 2)",
                                        "schedule.decay_fraction": "choice(0.1, 0.2)"}}))
    bad_value, misspelt = err.value.problems
    assert bad_value.startswith("bad value for 'train.batch_size'") and bad_value.endswith(
        "(overrides)")
    assert misspelt.startswith("unknown config key 'optim.lrr'") and misspelt.endswith(
        "(grid.optim.lrr)")


def test_removing_a_config_key_is_one_sentence():
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "overrides": [*BASE["overrides"], "~optim.lr"]}))
    assert err.value.problems == [
        "'~optim.lr': a config key cannot be removed (every key has a value); set it instead, "
        "e.g. optim.lr=VALUE (python -m trainer --cfg prints every key with its default) "
        "(overrides)"]


def test_extend_takes_the_sweeps_own_storage_root_whatever_its_characters(tmp_path):
    root = tmp_path / "runs(1)"
    spec = spec_from_dict({**BASE, "storage_root": str(root)})
    more = extended(spec, ["optim.lr=choice(3e-2)", f"storage_root={root}"])
    assert more.grid["optim.lr"] == "tag(log, choice(0.001, 0.003, 0.01, 0.03))"
    with pytest.raises(ConfigError, match=r"cannot parse it"):
        extended(spec, ["optim.lr=choice(5e-4"])


def test_a_specs_data_files_are_read_from_anywhere_once_it_is_read(tmp_path, monkeypatch):
    """`sweep status`, `resume` and `extend` compose the stored spec's trials from wherever
    they run: relative data paths stopped them (`data/x.txt does not exist`) in any other
    folder, and a cluster's workers start in another folder too."""
    from orchestrator.driver import prepare
    from orchestrator.spec import anchored

    (tmp_path / "work" / "data").mkdir(parents=True)
    (tmp_path / "work" / "data" / "x.txt").write_text("words to learn from\n" * 2000)
    monkeypatch.chdir(tmp_path / "work")
    raw = {"name": "s", "storage_root": str(tmp_path / "runs"),
           "overrides": ["model=tiny", "data=files", "data.paths=[data/x.txt]",
                         "train.tokens=32768", "train.seq_len=64"],
           "grid": {"optim.lr": "choice(1e-3, 3e-3)"}}
    spec = spec_from_dict(raw)
    where = tmp_path / "work" / "data" / "x.txt"
    assert f"data.paths=['{where}']" in spec.overrides
    again = spec.with_overrides(["data.tokenizer=./tok.json", "data.paths=[./data/x.txt]"])
    assert f"data.paths=['{where}']" in again.overrides
    assert f"data.tokenizer='{tmp_path / 'work' / 'tok.json'}'" in again.overrides
    patterns = spec.with_overrides(["data.paths=['data/*.txt']", "data.val_paths=[v/x.txt]"])
    assert f"data.paths=['{tmp_path / 'work' / 'data' / '*.txt'}']" in patterns.overrides
    assert f"data.val_paths=['{tmp_path / 'work' / 'v' / 'x.txt'}']" in patterns.overrides
    ids = [t.trial_id for t in prepare(spec)[1]]
    monkeypatch.chdir(tmp_path)  # as `sweep status s` from another folder reads it
    stored = spec_from_dict(spec.to_dict(), stored=True)
    assert [t.trial_id for t in prepare(stored)[1]] == ids
    for same in ("optim.lr=1e-3", "data.paths=choice([a.txt],[b.txt])", "data.tokenizer=null",
                 "data.paths=[${oc.env:DATA_DIR}/a.txt]", "data.tokenizer=${oc.env:TOK}"):
        assert anchored(same) == same


def test_a_glob_or_a_null_in_a_sweep_says_what_to_write(tmp_path, capsys):
    """A searched spec's glob() was a traceback ('Glob' object has no attribute 'tags'), a
    grid's suggested other options than its group's, and choice(null, 512) said only that it
    could not be parsed."""
    from orchestrator.trials import grid_axes

    searched = {**BASE, "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                                 "schedule": "glob(*)"},
                "search": {"optuna": {"n_trials": 2}}}
    import yaml

    from orchestrator import cli

    path = tmp_path / "searched.yaml"
    path.write_text(yaml.safe_dump({**searched, "storage_root": str(tmp_path / "runs")}))
    assert cli.main(["launch", str(path), "--dry-run",
                     "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "grid.schedule: glob() is not supported in a sweep; list the values, e.g. " \
        "choice(constant, cosine, linear, power, wsd)" in capsys.readouterr().err
    _, problems = grid_axes(spec_from_dict({**BASE, "grid": {
        "schedule.warmup_tokens": "choice(null, 512)"}}))
    assert problems == ["grid.schedule.warmup_tokens: cannot parse 'choice(null, 512)' "
                        "('choice(null, 512)': null cannot be a "
                        "sweep's value; quote it, e.g. choice('null', 512)); use Hydra's sweep "
                        "grammar, e.g. choice(1e-3, 3e-3) or tag(log, choice(...))"]
    # (Hydra's exception class is not said: "ValueError while evaluating 'choice()'")
    _, problems = grid_axes(spec_from_dict({**BASE, "grid": {"optim.lr": "choice()"}}))
    assert problems == ["grid.optim.lr: cannot parse 'choice()' ('choice()': empty choice is "
                        "not legal); use Hydra's sweep grammar, e.g. choice(1e-3, 3e-3) or "
                        "tag(log, choice(...))"]


@pytest.mark.parametrize("axis", ["train.compile", "train.log_every_steps"])
def test_an_axis_that_changes_no_trial_is_refused_not_halved(axis):
    """Keys not in the trial id (how a trial runs, not what it trains) made one trial of each
    point: a compile on/off grid gave half its trials, all labelled with the first value."""
    values = "choice(true, false)" if axis == "train.compile" else "choice(1, 10)"
    with pytest.raises(ConfigError) as caught:
        expand(spec_from_dict({**BASE, "grid": {**BASE["grid"], axis: values}}))
    assert caught.value.problems == [
        f"grid.{axis}: {values} changes how a trial runs, not what it trains (the key is not "
        "in the trial id), so each point would run once, at one of its values; set one value "
        "in overrides"]
    # the same value written twice is one trial, as before
    same = expand(spec_from_dict({**BASE, "grid": {"optim.lr": "choice(1e-3, 0.001, 3e-3)"}}))
    assert len(same) == 2 * len(BASE["seeds"])


def test_a_plain_value_for_the_only_axis_says_how_to_sweep_it():
    """It said `the spec's grid is empty: add at least one axis`, of a spec with one."""
    spec = spec_from_dict({**BASE, "grid": {"optim.lr": "choice(1e-3, 3e-3)"}})
    with pytest.raises(ConfigError) as caught:
        spec.with_overrides(["optim.lr=1e-3"])
    assert caught.value.problems == [
        "optim.lr=1e-3 replaces grid.optim.lr, the spec's only axis; give "
        "'optim.lr=choice(1e-3)' for a sweep of that one value"]
    assert "optim.lr" not in spec_from_dict(BASE).with_overrides(["optim.lr=1e-3"]).grid


def test_a_float_range_leaves_out_its_end_and_keeps_its_values_as_written():
    """Hydra adds the step up: range(0.0, 0.1, 0.01) gave 11 values, 0.1 among them, and
    labels such as optim.weight_decay=0.030000000000000002."""
    from orchestrator.trials import grid_axes

    axes, problems = grid_axes(spec_from_dict({**BASE, "grid": {
        "optim.weight_decay": "range(0.0, 0.1, 0.01)", "optim.lr": "range(1.0, 0.0, -0.25)",
        "train.batch_size": "range(8, 17, 8)"}}))
    assert problems == []
    assert axes == {"optim.weight_decay": ["0.0", "0.01", "0.02", "0.03", "0.04", "0.05",
                                           "0.06", "0.07", "0.08", "0.09"],
                    "optim.lr": ["1.0", "0.75", "0.5", "0.25"], "train.batch_size": ["8", "16"]}


@pytest.mark.parametrize("text, fix", [
    ("name: t\ngrid:\n\toptim.lr: choice(1e-3)\n", "indent with spaces, not tabs"),
    ("name: t\ngrid:\n  optim.lr: choice({lr: 1e-3}, 2)\n",
     "quote a value holding ': ' or braces, e.g. 'choice({a: 1}, {a: 2})'"),
])
def test_a_yaml_mistake_says_how_to_write_it(tmp_path, text, fix):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    assert caught.value.problems[0].endswith(fix)


def test_token_counts_past_millions_read_short():
    from orchestrator.families import _short

    assert [_short(n) for n in (512, 65_536, 3_000_000, 2 * 10 ** 9, 10 ** 15)] == \
        ["512", "65.54k", "3M", "2B", "1000T"]


def test_every_command_line_mistake_is_said_at_once():
    """The first refused key stopped the command: run_dir, then tracking.uri, then
    train.world_size, one launch each; a sweep over storage_root became a folder named
    `choice(/a,/b)`."""
    with pytest.raises(ConfigError) as caught:
        spec_from_dict(BASE).with_overrides([
            "run_dir=/tmp/x", "tracking.uri=sqlite:///a.db", "train.world_size=2",
            "storage_root=choice(/tmp/a,/tmp/b)"])
    assert [p.partition(":")[0] for p in caught.value.problems] == [
        "run_dir=/tmp/x", "tracking.uri=sqlite", "train.world_size=2",
        "storage_root=choice(/tmp/a,/tmp/b)"]
    assert caught.value.problems[-1].endswith("a sweep keeps its trials in one storage_root; "
                                              "give one folder, or a spec per folder")


def test_a_deleted_key_as_a_grid_axis_says_how_to_sweep_it():
    """`~optim.lr: 1e-3,1e-2` in a grid (or on the command line) was Hydra's "Could not delete
    from config. The value of 'optim.lr' is 0.003 and not 0.001", once per value."""
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, "grid": {**BASE["grid"], "~train.batch_size": "8,16"}})
    assert err.value.problems == [
        "spec: grid.~train.batch_size: ~ deletes a key, and a grid axis sweeps its values; "
        "write train.batch_size: ... to sweep it, or put ~train.batch_size in overrides to "
        "delete it from every trial"]
    with pytest.raises(ConfigError) as err:
        spec_from_dict(BASE).with_overrides(["~optim.lr=1e-3,1e-2"])
    assert err.value.problems == ["~optim.lr=1e-3,1e-2: ~ deletes a key, and a sweep of values "
                                  "makes a grid axis; give optim.lr=1e-3,1e-2 to sweep it"]


def test_a_range_written_high_to_low_says_to_swap_its_ends():
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "grid": {**BASE["grid"],
                                                "train.batch_size": "range(16, 8)"}}))
    assert err.value.problems == [
        "grid.train.batch_size: 'range(16, 8)' expands to no values; give range(8, 16) (range "
        "counts from its first end up to its second)"]


def test_choice_values_without_commas_says_to_separate_them():
    # Hydra reads choice(8 16 32) as one value, "8 16 32": a stranger got "Value '8 16 32' of
    # type str could not be converted to Integer", with no word of the commas
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "grid": {**BASE["grid"],
                                                "train.batch_size": "choice(8 16 32)"}}))
    assert err.value.problems == [
        "grid.train.batch_size: 'choice(8 16 32)' has the value '8 16 32'; separate values "
        "with commas: choice(8, 16, 32)"]


def test_a_grid_of_too_many_trials_is_refused_before_any_is_composed():
    """range(1e-4, 1, 1e-4) x range(0, 1, 0.01): a dry run composed 999,900 trials for 18
    minutes and 2.6 GB without a word."""
    from orchestrator.trials import MAX_TRIALS

    grid = {"optim.lr": "range(0.0001, 1, 0.0001)", "optim.weight_decay": "range(0, 1, 0.01)"}
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "grid": grid, "seeds": [0]}))
    assert err.value.problems == [
        f"the grid makes 999,900 trials (optim.lr: 9,999 values, optim.weight_decay: 100 "
        f"values; 1 seed), more than one sweep runs ({MAX_TRIALS:,}): check each range's "
        "step, or split the grid into sweeps"]


def test_quoted_numbers_in_a_grid_are_the_numbers_their_trials_are_named_by():
    """`choice("1e-3", "2e-3")` gave the trial of `choice(0.001, ...)` (one id) the label
    `optim.lr=1e-3`: one trial, two names, by which spec trained it."""
    quoted = expand(spec_from_dict({**BASE, "grid": {"optim.lr": 'choice("1e-3", "2e-3")'},
                                    "seeds": [0]}))
    plain = expand(spec_from_dict({**BASE, "grid": {"optim.lr": "choice(0.001, 0.002)"},
                                   "seeds": [0]}))
    assert [(t.trial_id, t.label) for t in quoted] == [(t.trial_id, t.label) for t in plain]
    assert quoted[0].label.startswith("optim.lr=0.001 ")


@pytest.mark.parametrize("expr, fix", [
    ("range(1, 0)", "range counts from its first end up to its second, by 1 unless a third "
                    "number gives the step: give range(0, 1, 0.25) for 4 values, or list the "
                    "values you mean, e.g. choice(0, 1)"),
    ("range(0.01, 0.001)", "range counts from its first end up to its second, by 1 unless a "
                           "third number gives the step: give range(0.001, 0.01, 0.00225) for "
                           "4 values, or list the values you mean, e.g. choice(0.001, 0.01)")])
def test_a_backward_range_with_less_than_two_steps_between_its_ends_is_told_a_step(expr, fix):
    """Told range(0.001, 0.01), a user was next refused: it has one value (range steps by 1)."""
    with pytest.raises(ConfigError) as err:
        expand(spec_from_dict({**BASE, "grid": {**BASE["grid"], "optim.lr": expr}}))
    assert err.value.problems == [f"grid.optim.lr: '{expr}' expands to no values; {fix}"]


def test_a_key_given_twice_on_the_command_line_is_refused():
    """The last of `optim.lr=choice(1e-3) optim.lr=choice(1e-2)` was taken without a word (a
    key twice in the spec file is refused)."""
    with pytest.raises(ConfigError) as err:
        spec_from_dict(BASE).with_overrides(["optim.lr=choice(1e-3)", "train.tokens=4096",
                                             "optim.lr=choice(1e-2)", "+train.tokens=8192"])
    assert err.value.problems == [
        "optim.lr is given twice on the command line (optim.lr=choice(1e-3) and "
        "optim.lr=choice(1e-2)); give it once",
        "train.tokens is given twice on the command line (train.tokens=4096 and "
        "+train.tokens=8192); give it once"]


@pytest.mark.parametrize("args, problems", [
    (["optim.lr", "=", "0.1"], ["'optim.lr = 0.1': remove the spaces around = (optim.lr=0.1)"]),
    (["optim.lr=", "0.1"], ["'optim.lr= 0.1': remove the spaces around = (optim.lr=0.1)"]),
    (["optim.lr", "=0.1", "train.tokens", "=", "8192"],
     ["'optim.lr =0.1': remove the spaces around = (optim.lr=0.1)",
      "'train.tokens = 8192': remove the spaces around = (train.tokens=8192)"])])
def test_spaces_around_an_equals_sign_are_one_sentence(args, problems):
    """`optim.lr = 0.1` was three sentences, the last telling to write `0.1=VALUE`."""
    with pytest.raises(ConfigError) as err:
        spec_from_dict(BASE).with_overrides(args)
    assert err.value.problems == problems



@pytest.mark.parametrize("lrs, widths, values", [
    ("choice(1e-3, 3e-3)", "range(32, 64)", "33, 34, 35, ..., 63 (30 values)"),
    ("choice(1e-3, 3e-3)", "choice(32, 40, 56)", "40, 56"),
    ("choice(1e-3)", "choice(32, 40, 56)", "40, 56"),  # (one trial each: its label, merged)
])
def test_one_problem_of_many_values_of_an_axis_is_one_line_naming_them(lrs, widths, values):
    """`model.width: range(32, 64)` over head_dim 16: 30 lines, one per width not a multiple
    of 16, each "(2 trials)" (tests by a stranger)."""
    spec = spec_from_dict({**BASE, "overrides": [*BASE["overrides"], "model.head_dim=16"],
                           "grid": {"optim.lr": lrs, "model.width": widths}, "seeds": [0]})
    with pytest.raises(ConfigError) as err:
        expand(spec)
    assert err.value.problems == [
        f"model.width={values} is not divisible into heads of model.head_dim=16: make the "
        "width a multiple of head_dim"]
