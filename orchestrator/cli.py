"""The `sweep` command: its parser, its entry point, and the checks of the tracking store that
every subcommand passes first. The handlers are `orchestrator.cli_launch` (launch, resume,
extend), `orchestrator.cli_monitor` (list, status, ui, cancel) and `orchestrator.cli_fit` (fit,
recommend); the work is in `orchestrator.commands` (and the modules it names) and `fitter`.

Global options (`--tracking-uri`, and `--address` for the subcommands that reach Ray) go
before or after the subcommand, as users of git, mlflow and ray type them; given in both
places, the one after the subcommand wins.

Each subcommand is one parser entry and one `_name(args, uri)` handler in `COMMANDS`; handlers
import what they need, so `sweep --help` stays fast. User errors (bad spec, unknown sweep,
unreachable cluster, data a law cannot be fitted to) print one line each and exit 2.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import math
import os
import signal
import sys

from orchestrator import cli_launch
from orchestrator.cli_fit import _fit, _recommend, one_source
from orchestrator.cli_launch import _extend, _interrupted_hint, _launch, _resume
from orchestrator.cli_monitor import _cancel, _list, _status, _ui

DEFAULT_URI = "sqlite:///mlflow.db"


RAY_COMMANDS = ("launch", "resume", "extend")
"""The subcommands that reach Ray, and so take `--address`."""


def _global_options(*, ray: bool, suppress: bool) -> argparse.ArgumentParser:
    """The options every subcommand takes (`--address` only where Ray is reached), before or
    after the subcommand. After it (`suppress`), an option not given sets nothing, so a value
    given before the subcommand stands; one given after wins."""
    default = argparse.SUPPRESS if suppress else None
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options (before or after the subcommand)")
    group.add_argument("--tracking-uri", metavar="URI", default=default,
                       help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                            "sqlite:///mlflow.db here)")
    if ray:
        group.add_argument("--address", metavar="ADDR", default=default,
                           help="Ray cluster for launch, resume and extend (default: "
                                "$RAY_ADDRESS, else a local Ray)")
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweep", description="Proxy-model sweeps on Ray, "
                                     "recorded in MLflow.",
                                     parents=[_global_options(ray=True, suppress=False)])
    sub = parser.add_subparsers(dest="command", required=True)
    local = [_global_options(ray=False, suppress=True)]
    on_ray = [_global_options(ray=True, suppress=True)]
    p = sub.add_parser("launch", parents=on_ray, help="run a sweep spec (only trials not yet "
                       "done)", usage="sweep launch [options] spec [overrides ...]")
    # (nargs="?" and a check in `parse_args`: argparse said "the following arguments are
    # required: spec, overrides", and overrides are not)
    p.add_argument("spec", nargs="?", help="sweeps/NAME.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides: a sweep expression sets a "
                   "grid axis, a plain value the base config")
    p.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    _share_option(p)
    p = sub.add_parser("list", parents=local, help="every sweep in the tracking store, with "
                       "its status and trials")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("status", parents=local, help="counts, running trials, best so far, ETA")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("resume", parents=on_ray, help="run what is not done of a sweep, by name")
    p.add_argument("name")
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)  # (refused, with the way)
    p.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    _share_option(p)
    p = sub.add_parser("extend", parents=on_ray, help="add grid values to a sweep and run the "
                       "new trials")
    p.add_argument("name", help="sweep name (MLflow experiment)")
    p.add_argument("overrides", nargs="+", help="what to add: values to an axis "
                   "('optim.lr=choice(6.4e-2)'), a new axis, seeds=[0,1], or a searched "
                   "sweep's search.optuna.n_trials=N")
    p.add_argument("--dry-run", action="store_true", help="list the extended sweep's trials "
                   "(done / would run), run nothing")
    _share_option(p)
    p = sub.add_parser("cancel", parents=local, help="stop a running sweep; running trials -> "
                       "interrupted")
    p.add_argument("name")
    p = sub.add_parser("ui", parents=local, help="start the MLflow UI on the sweep's store")
    p.add_argument("name", nargs="?", help="sweep to open at (default: the list of every sweep)")
    p.add_argument("--port", type=_port, default=5000, help="port of the UI (default 5000)")
    _fit_parsers(sub, local)
    return parser


def _share_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-share", action="store_true", help="train every token budget from "
                   "scratch instead of branching it from its family's trunk, in this command "
                   "only (the spec's share_prefix: false, for good)")
    p.add_argument("--fuse", type=_fuse_value, metavar="{auto,on,off,K}", help="train trials "
                   "that differ only in per-member scalars (LR, weight decay, schedule) as "
                   "fused groups: auto (on for trials without a GPU), on (a size for the "
                   "cluster), off, or K members at most; in this command only (the spec's "
                   "fuse, for good; default auto)")
    p.add_argument("--max-concurrent", type=_trials_at_once, metavar="N", help="train at most "
                   "N trials at once, in this command only (the spec's max_concurrent, for "
                   "good; default: all the cluster holds)")


def _trials_at_once(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of trials >= 1")
    return int(text)


def _positive(text: str) -> float:
    """A count or size on the command line: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number > 0, e.g. 1e9")
    return value


MIN_RESAMPLES = 20


def _count(text: str) -> int:
    """Bootstrap resamples: 0 (no intervals), or enough for a 90% interval to be read off."""
    if not text.isdigit() or 0 < int(text) < MIN_RESAMPLES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 0 (no intervals) or a whole number of resamples >= "
            f"{MIN_RESAMPLES} (an interval is the central 90% of them)")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: give a port number from 1 to 65535")
    return int(text)


def _fuse_value(text: str) -> bool | int | str:
    from orchestrator.spec import FUSE_VALUES, parse_fuse
    value = parse_fuse(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"--fuse {text}: {FUSE_VALUES}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with `--address` refused where no Ray is reached.

    Overrides may surround options (`launch s.yaml a=1 --address X b=2`): argparse takes the
    first run of them as the `overrides` positional and leaves the rest, which join it in
    order.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and not any(a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif any(a == "--address" or a.startswith("--address=") for a in extra):
        parser.error(f"--address applies to {', '.join(RAY_COMMANDS)}; `sweep "
                     f"{args.command}` reads only the tracking store (--tracking-uri)")
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "launch" and args.spec is None:
        launch = next(a for a in parser._subparsers._group_actions
                      if isinstance(a, argparse._SubParsersAction)).choices["launch"]
        launch.error("give the spec file to launch, e.g. sweep launch sweeps/demo.yaml "
                     "(overrides after it are optional)")
    if args.address is not None and args.command not in RAY_COMMANDS:
        parser.error(f"--address applies to {', '.join(RAY_COMMANDS)}; `sweep "
                     f"{args.command}` reads only the tracking store (--tracking-uri)")
    return args


def _fit_parsers(sub, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fit", parents=parents,
                       help="fit scaling laws to a sweep's runs (or a CSV of runs)")
    p.add_argument("name", nargs="?", help="sweep name (MLflow experiment)")
    p.add_argument("--from-csv", metavar="FILE", help="runs exported as CSV instead of a sweep")
    p.add_argument("--law", metavar="{loss,lr,timescale,batch,cbs}",
                   help="fit only this law (default: every law the runs support)")
    p.add_argument("--json", action="store_true", help="print fit.json only")
    p.add_argument("--out", metavar="DIR", help="where fit.json and plots/ go "
                   "(default: outputs/fit/NAME, and a folder in it for --group, --pool or --law)")
    p.add_argument("--n-boot", type=_count, default=None,
                   help="draws for the intervals (default: 500 per law, 200 bootstrap resamples "
                   "per slice optimum and for the loss law; a number given is used for all)")
    p.add_argument("--group", action="append", metavar="KEY=VALUE",
                   help="fit only this group, e.g. model.param=mup (repeatable)")
    p.add_argument("--pool", action="store_true", help="fit one law across groups (muP with "
                   "SP, ...) instead of one per group; each (N, D, B) takes its best slice")
    p = sub.add_parser("recommend", parents=parents,
                       help="LR, batch size and weight decay for a big run")
    p.add_argument("name", nargs="?", help="sweep name (MLflow experiment)")
    p.add_argument("--from-csv", metavar="FILE", help="runs exported as CSV instead of a sweep "
                   "(as `sweep fit --from-csv` reads them)")
    p.add_argument("--params", type=_positive, required=True, metavar="N",
                   help="parameters N of the big model as the sweep counts them: every "
                   "parameter but the input embedding and position table (the readout "
                   "counts): depth*(4 + 2*mlp_ratio)*width^2 + width*vocab + "
                   "(2*depth + 1)*width, e.g. 1.24e8 for width 768, depth 12, mlp_ratio 4, "
                   "vocab 50,257")
    p.add_argument("--tokens", type=_positive, required=True, metavar="D",
                   help="training tokens")
    p.add_argument("--batch", type=_positive, metavar="B",
                   help="batch size in tokens per step (default: from the batch law, else "
                        "the cbs law's critical batch size)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--n-boot", type=_count, default=None,
                   help="draws for the intervals (default: 500 per law, 200 bootstrap resamples "
                   "per slice optimum and for the loss law; a number given is used for all)")
    p.add_argument("--group", action="append", metavar="KEY=VALUE",
                   help="whose laws to use when the sweep has groups, e.g. model.param=mup")
    p.add_argument("--pool", action="store_true", help=argparse.SUPPRESS)  # (refused: _recommend)


_exit_code = 1
"""The code the console script ends with (1 until its command returns: a stack was printed)."""


def run() -> None:
    """Entry point of the `sweep` console script (and `python -m orchestrator.cli`): `main`,
    then the process ends once its exit handlers ran (`_end_without_teardown`). Not `main`
    itself, which tests call in their own process."""
    global _exit_code
    atexit.register(_end_without_teardown)  # (before Ray's and MLflow's, imported later: last)
    try:
        _exit_code = main()
    except SystemExit as done:  # argparse: --help (0), a usage error (2)
        _exit_code = done.code if isinstance(done.code, int) else int(done.code is not None)
        raise
    except KeyboardInterrupt:  # (before `_main` could take it: as Python ends by it)
        _exit_code = 130
        raise
    sys.exit(_exit_code)


def main(argv: list[str] | None = None) -> int:
    """The `sweep` command on `argv` (None: the process's arguments); its exit code."""
    code = _main(argv)
    if argv is None:  # the console script, which exits next: Ray shuts down at exit, and a
        # Ctrl-C then printed that shutdown's stack ("Exception ignored in atexit callback");
        # the command has ended, and its code stands (a finished sweep exited 130)
        with contextlib.suppress(ValueError):  # (not the main thread)
            signal.signal(signal.SIGINT, lambda *_: os._exit(code))
            signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
    return code


def _end_without_teardown() -> None:
    """The last exit handler (threads joined, Ray shut down, MLflow and logging flushed):
    end the process now. Python's teardown of the modules left (freeing torch's, MLflow's
    and Ray's objects: 2-4 s of every command on 2 cores, for nothing) restores the default
    signal handlers early, so a Ctrl-C in it ended a finished command by the signal."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (a reader gone: `sweep status | head`)
            stream.flush()
    os._exit(_exit_code)


def _main(argv: list[str] | None) -> int:
    from fitter.errors import FitError
    from trainer.errors import ConfigError

    cli_launch.ENDED.clear()  # (a command before it in this process: a test's)
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (a hint repeats the command)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    try:
        _quiet_libraries()
        from orchestrator.driver import absolute_tracking_uri, stop_on_sigterm
        uri = absolute_tracking_uri(uri)
        if args.command in RUNS_TRIALS:
            stop_on_sigterm()  # (a scheduler's stop is taken as Ctrl-C is)
        if args.command in ("fit", "recommend"):
            one_source(args)
        if getattr(args, "from_csv", None) is None:  # (a fit of a CSV reads no store)
            _server_answers(uri)
        _store_exists(args, uri)
        if getattr(args, "from_csv", None) is None:
            from orchestrator.store import existing_sqlite_ready

            existing_sqlite_ready(uri)  # (one another command is creating: read once done)
        return COMMANDS[args.command](args, uri)
    except ConfigError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except FitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sweep status NAME | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as stop:
        if "code" in cli_launch.ENDED:  # (its outcome was had: the stop came as it printed it)
            return cli_launch.ENDED["code"]
        # Ctrl-C (or SIGTERM: `trainer.errors.Terminated`) before the driver's loop
        # (importing, starting Ray) or a second one while it winds down: one line, not
        # Python's stack. Another, during Ray's own shutdown at exit, ends the process at
        # once (not with that shutdown's stack).
        from orchestrator.driver import sigterm_received
        from trainer.errors import Terminated

        terminated = isinstance(stop, Terminated) or sigterm_received()
        code = 128 + signal.SIGTERM if terminated else 130
        with contextlib.suppress(ValueError):  # (main() called off the main thread)
            signal.signal(signal.SIGINT, lambda *_: os._exit(code))
            signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
        hint, ended = _interrupted_hint(args, uri) if args.command in RUNS_TRIALS and not getattr(
            args, "dry_run", False) else ("", False)  # (a dry run runs nothing: nothing to resume)
        print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}{hint}",
              file=sys.stderr)
        # (every trial had ended: a scheduler reads 0, as for a stop its driver's loop took
        # as its last trials ended)
        return 0 if ended else code
    except Exception as err:
        from mlflow.exceptions import MlflowException

        from orchestrator.driver import TrackerLost

        if isinstance(err, TrackerLost):  # (not the user's doing: exit 1, one sentence)
            print(f"error: {err}", file=sys.stderr)
            return 1
        if not isinstance(err, MlflowException):
            raise
        # The store refused the URI or cannot be reached: one sentence, not MLflow's stack.
        from orchestrator.tracking import redact
        reason = (err.message if hasattr(err, "message") else str(err)).strip()
        reason = reason.splitlines()[0].split(" See http")[0].rstrip(".")
        print(f"error: tracking store {redact(uri)}: {_store_refusal(err, reason)}",
              file=sys.stderr)
        return 2


def _store_refusal(err, reason: str) -> str:
    """What the store's refusal asks the user to fix: the credentials for a 401 or 403 (the
    URI was right; it said to check the URI), else the URI."""
    code = getattr(err, "get_http_status_code", lambda: None)()
    text = str(err)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == 401 or "401 != 200" in text or "not authenticated" in text.lower():
        return ("the server refused the credentials (401: not authenticated); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of the "
                "server" + (f" (the password of {user} is not the one it has)" if user else ""))
    if code == 403 or "403 != 200" in text or "permission denied" in text.lower():
        return (f"the server's account {user or '(MLFLOW_TRACKING_USERNAME)'} has no permission "
                "for this (403); ask its admin for it, or set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD to an account that has")
    return f"{reason}; check --tracking-uri (or MLFLOW_TRACKING_URI)"


RUNS_TRIALS = ("launch", "resume", "extend")
WRITES_THE_STORE = (*RUNS_TRIALS, "cancel", "fit")
READS_A_SWEEP = ("status", "resume", "extend", "cancel", "recommend", "fit", "ui")
"""Subcommands that read a sweep already recorded: none of them creates a store."""


def _server_answers(uri: str) -> None:
    """A tracking server that is down or misspelt: said at once, not after MLflow's retries."""
    from trainer.errors import ConfigError
    from trainer.reporting import redact, store_uri_problem, unreachable_server

    if problem := store_uri_problem(uri, named=f"tracking URI {redact(uri)}",
                                    flag="--tracking-uri (or MLFLOW_TRACKING_URI)"):
        raise ConfigError(problem)
    if reason := unreachable_server(uri):
        if reason.startswith("it answers, but not as"):  # (a path that is not the server's)
            raise ConfigError(f"tracking URI {redact(uri)}: {reason} to --tracking-uri (or "
                              "MLFLOW_TRACKING_URI)")
        fix = ("fix --tracking-uri (or MLFLOW_TRACKING_URI)" if "give http://" in reason else
               "check the server (restart it), or point --tracking-uri (or "
               "MLFLOW_TRACKING_URI) at one that answers" if "did not answer" in reason else
               "start it, or point --tracking-uri (or MLFLOW_TRACKING_URI) at one that runs")
        raise ConfigError(f"tracking server {redact(uri)} cannot be reached: {reason}; {fix}")


def _store_exists(args, uri: str) -> None:
    """A misspelt SQLite path would otherwise be created, empty, by the first read."""
    from orchestrator.store import missing_sqlite, not_sqlite, sqlite_access_problem
    from trainer.errors import ConfigError

    if getattr(args, "from_csv", None) is None and (why := sqlite_access_problem(
            uri, writes=args.command in WRITES_THE_STORE)):
        does = ("records into it" if args.command in WRITES_THE_STORE else "reads it")
        raise ConfigError(f"tracking store {uri}: {why}; `sweep {args.command}` {does}: give "
                          "this user write access, or copy the store to a folder it can "
                          "write and point --tracking-uri (or MLFLOW_TRACKING_URI) at the copy")
    if path := not_sqlite(uri):
        raise ConfigError(f"the tracking store {path} is not an SQLite database (a file of "
                          "something else): point --tracking-uri (or MLFLOW_TRACKING_URI) at "
                          "the sweep's store, or at a new file, e.g. sqlite:///mlflow.db")
    reads = args.command == "list" or (args.command in READS_A_SWEEP
                                       and getattr(args, "name", None) is not None)
    if reads and (path := missing_sqlite(uri)):
        where = f"the tracking store {path} is an empty file" if os.path.exists(path) else \
            f"no tracking store at {path}"
        raise ConfigError(f"{where}: launch a sweep first (sweep launch "
                          "SPEC), or point --tracking-uri (or MLFLOW_TRACKING_URI) at the "
                          "store the sweep was launched with")


def _quiet_libraries() -> None:
    # MLflow's INFO lines and artifact progress bars drown the command's own output.
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # ("🏃 View run")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Ray's notice, on every launch, that the local cluster it starts takes tokens (the safe
    # default, kept); its warning that one does not is kept too.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: not record.getMessage().startswith("Token authentication is enabled"))


COMMANDS = {"launch": _launch, "list": _list, "status": _status, "resume": _resume,
            "extend": _extend, "cancel": _cancel, "ui": _ui, "fit": _fit,
            "recommend": _recommend}


if __name__ == "__main__":
    run()
