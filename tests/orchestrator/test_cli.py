"""`sweep`'s command line: global options before or after the subcommand; no Ray here."""

import pytest

from orchestrator import cli
from orchestrator.cli import parse_args


@pytest.mark.parametrize("argv, uri, address", [
    (["launch", "s.yaml", "--tracking-uri", "B"], "B", None),
    (["--tracking-uri", "A", "launch", "s.yaml"], "A", None),
    (["--tracking-uri", "A", "launch", "s.yaml", "--tracking-uri", "B"], "B", None),  # after wins
    (["--address", "R", "launch", "s.yaml", "--tracking-uri", "B"], "B", "R"),
    (["--tracking-uri", "A", "launch", "s.yaml", "--address", "R"], "A", "R"),
    (["--address", "R", "launch", "s.yaml", "--address", "S"], None, "S"),
    (["launch", "s.yaml"], None, None),
])
def test_global_options_go_before_or_after_the_subcommand(argv, uri, address):
    args = parse_args(argv)
    assert (args.tracking_uri, args.address, args.spec) == (uri, address, "s.yaml")


@pytest.mark.parametrize("command", [["resume", "n"], ["extend", "n", "optim.lr=choice(1)"]])
def test_every_subcommand_that_reaches_ray_takes_address_on_either_side(command):
    assert parse_args(["--address", "R", *command]).address == "R"
    assert parse_args([*command, "--address", "R"]).address == "R"
    assert parse_args([*command, "--tracking-uri", "B"]).tracking_uri == "B"


@pytest.mark.parametrize("command", [["status", "n"], ["cancel", "n"], ["ui"], ["fit", "n"],
                                     ["recommend", "n", "--params", "1", "--tokens", "1"]])
def test_every_subcommand_takes_the_tracking_uri_on_either_side(command):
    assert parse_args(["--tracking-uri", "A", *command]).tracking_uri == "A"
    assert parse_args([*command, "--tracking-uri", "B"]).tracking_uri == "B"
    assert parse_args(["--tracking-uri", "A", *command, "--tracking-uri", "B"]).tracking_uri \
        == "B"


def test_overrides_may_surround_options():
    args = parse_args(["launch", "s.yaml", "a=1", "--tracking-uri", "B", "b=2", "--dry-run",
                       "a=3"])
    assert args.overrides == ["a=1", "b=2", "a=3"] and args.dry_run
    assert args.tracking_uri == "B"


@pytest.mark.parametrize("argv, fragment", [
    (["status", "n", "--address", "R"], "unrecognized arguments: --address R"),
    (["--address", "R", "status", "n"], "--address applies to launch, resume, extend"),
    (["status", "n", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_options_where_they_mean_nothing_are_refused(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and fragment in capsys.readouterr().err


def test_help_says_where_global_options_go(capsys):
    for argv, ray in ((["--help"], True), (["launch", "--help"], True),
                      (["resume", "--help"], True), (["status", "--help"], False)):
        with pytest.raises(SystemExit):
            parse_args(argv)
        text = capsys.readouterr().out
        assert "global options (before or after the subcommand)" in text
        assert "--tracking-uri URI" in text and ("--address ADDR" in text) == ray


def test_the_uri_after_the_subcommand_is_the_store_used(monkeypatch, tmp_path):
    seen = {}

    def status(args, uri):
        seen["uri"] = uri
        return 0

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "status": status})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "x", "--tracking-uri", "sqlite:///m.db"]) == 0
    assert seen["uri"] == f"sqlite:///{tmp_path}/m.db"


def test_a_sweep_is_found_in_the_store_named_after_the_subcommand(tmp_path, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    MlflowClient(tracking_uri=uri).create_experiment("held")
    assert cli.main(["status", "nosuch", "--tracking-uri", uri]) == 2
    assert "known sweeps: held" in capsys.readouterr().err
