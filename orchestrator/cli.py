"""The `sweep` command. Parsing only; the work is in `orchestrator.commands` and `fitter`.

Global options (`--tracking-uri`, and `--address` for the subcommands that reach Ray) go
before or after the subcommand, as users of git, mlflow and ray type them; given in both
places, the one after the subcommand wins.

Each subcommand is one parser entry and one `_name(args, uri)` handler in `COMMANDS`; handlers
import what they need, so `sweep --help` stays fast. User errors (bad spec, unknown sweep,
unreachable cluster, data a law cannot be fitted to) print one line each and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import sys

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
                       "done)")
    p.add_argument("spec", help="sweeps/NAME.yaml")
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
                   "counts)")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sweep` console script."""
    code = _main(argv)
    if argv is None:  # the console script, which exits next: Ray shuts down at exit, and a
        # Ctrl-C then printed that shutdown's stack ("Exception ignored in atexit callback");
        # the command has ended, and its code stands (a finished sweep exited 130)
        with contextlib.suppress(ValueError):  # (not the main thread)
            signal.signal(signal.SIGINT, lambda *_: os._exit(code))
    return code


def _main(argv: list[str] | None) -> int:
    from fitter.errors import FitError
    from trainer.errors import ConfigError

    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (a hint repeats the command)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    try:
        _quiet_libraries()
        from orchestrator.driver import absolute_tracking_uri
        uri = absolute_tracking_uri(uri)
        if getattr(args, "from_csv", None) is None:  # (a fit of a CSV reads no store)
            _server_answers(uri)
        _store_exists(args, uri)
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
    except KeyboardInterrupt:
        # Ctrl-C before the driver's loop (importing, starting Ray) or a second one while it
        # winds down: one line, not Python's stack. Another, during Ray's own shutdown at
        # exit, ends the process at once (not with that shutdown's stack).
        with contextlib.suppress(ValueError):  # (main() called off the main thread)
            signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        hint = _interrupted_hint(args, uri) if args.command in RUNS_TRIALS else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as err:
        from mlflow.exceptions import MlflowException

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


def _interrupted_hint(args, uri: str) -> str:
    """What goes on after a Ctrl-C that stopped the command outside its driver's loop (while
    Ray started, or while the end waited on the store): the sweep it left running closed as
    interrupted, and the command that goes on, with the sweep's name (it said `NAME` for a
    launch), or, when nothing of it was recorded, the launch again."""
    name = getattr(args, "name", None)
    with contextlib.suppress(Exception):  # (a spec that cannot be read: the hint stays general)
        if name is None and args.command == "launch":
            from orchestrator.spec_file import load_spec

            name = load_spec(args.spec).name
    recorded = True
    with contextlib.suppress(Exception):  # (a store it cannot reach: what it has is said)
        from trainer.reporting import unreachable_server

        if name is not None and not unreachable_server(uri):
            from orchestrator.store import missing_sqlite
            from orchestrator.sweep_record import close_left_running

            with _no_http_retries():  # (a server that stopped answering: no 4-minute wait)
                recorded = not missing_sqlite(uri) and close_left_running(uri, name) is not None
    import shlex

    from trainer.reporting import redact

    again = shlex.join(redact(a) for a in getattr(args, "argv", None) or [args.command])
    if name is not None and not recorded and args.command == "launch":
        return f"; nothing of the sweep was recorded yet: `sweep {again}` starts it again"
    if name is not None and recorded and _not_stored_yet(args, uri, name):
        # (stopped while Ray started: its spec was not stored, and a resume runs the old one)
        what = "extension" if args.command == "extend" else "new spec"
        return (f"; the sweep's {what} was not stored yet: `sweep {again}` goes on (nothing "
                f"that finished is lost or trained again)")
    return INTERRUPTED_HINT.replace("NAME", shlex.quote(name) if name else "NAME")


def _not_stored_yet(args, uri: str, name: str) -> bool:
    """Did the interrupted `extend` or `launch` stop before it stored its spec (the sweep's
    stored spec is not the one it would have run)? A resume would run the old one: it said
    `sweep resume` goes on, which then found nothing of the extension to run."""
    if args.command not in ("extend", "launch"):
        return False
    from orchestrator.extend import extended
    from orchestrator.spec import root_path
    from orchestrator.spec_file import load_spec
    from orchestrator.sweep_record import stored_spec

    try:
        with _no_http_retries():
            stored = stored_spec(uri, name)
        if args.command == "extend":
            wanted = extended(stored, args.overrides)
        else:
            wanted = load_spec(args.spec).with_overrides(args.overrides)
    except Exception:  # noqa: BLE001 (an extend that adds nothing now: it was stored)
        return False
    keys = ("overrides", "grid", "seeds", "search")
    mine = {k: v for k, v in wanted.to_dict().items() if k in keys}
    theirs = {k: v for k, v in stored.to_dict().items() if k in keys}
    return mine != theirs or root_path(wanted.storage_root) != root_path(stored.storage_root)


@contextlib.contextmanager
def _no_http_retries():
    """MLflow's client without its retries and with a short timeout, for one last write
    after a Ctrl-C: the user asked to stop, not to wait out a server that does not answer."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


RUNS_TRIALS = ("launch", "resume", "extend")
INTERRUPTED_HINT = ("; nothing that finished is lost: `sweep resume NAME` goes on from there "
                    "(`sweep status NAME` shows where it stands)")
READS_A_SWEEP = ("status", "resume", "extend", "cancel", "recommend", "fit", "ui")
"""Subcommands that read a sweep already recorded: none of them creates a store."""


STORE_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql",
                 "databricks", "databricks-uc", "uc")
"""The tracking URI schemes MLflow stores runs to (SQLAlchemy dialects with a driver, as in
postgresql+psycopg, by their first part)."""


def _plugin_schemes() -> set[str]:
    """URI schemes of tracking stores that installed packages register with MLflow."""
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="mlflow.tracking_store")}


def _server_answers(uri: str) -> None:
    """A tracking server that is down or misspelt: said at once, not after MLflow's retries."""
    import re

    from trainer.errors import ConfigError
    from trainer.reporting import redact, unreachable_server

    if bare := re.fullmatch(r"([\w.-]+):(\d{1,5})(/.*)?", uri):  # localhost:5000
        raise ConfigError(f"tracking URI {redact(uri)} has no scheme: a server is "
                          f"http://{bare[1]}:{bare[2]}{bare[3] or ''} (https:// behind TLS); fix "
                          "--tracking-uri (or MLFLOW_TRACKING_URI)")
    named = re.match(r"([A-Za-z][\w+.-]*):", uri)  # (sqlite:/path, one slash or none)
    scheme = uri.partition("://")[0].split("+")[0].lower() if "://" in uri else (
        uri.lower() if uri.lower() in (*STORE_SCHEMES, *_plugin_schemes()) else
        named[1].split("+")[0].lower() if named and named[1].split("+")[0].lower()
        in STORE_SCHEMES else "")
    # (a bare scheme is MLflow's own form for some stores: `databricks`, `uc`)
    if scheme and scheme not in STORE_SCHEMES and scheme not in _plugin_schemes():
        raise ConfigError(f"tracking URI {redact(uri)}: MLflow has no store for '{scheme}://' "
                          "URIs; give sqlite:///PATH.db, http(s)://HOST:PORT or "
                          "postgresql://... to --tracking-uri (or MLFLOW_TRACKING_URI)")
    if scheme in ("", "file"):  # MLflow 3's file store, in maintenance: its runs are not ours
        from pathlib import Path

        given = uri.split(":", 1)[1] if scheme else uri  # (file:/p, file:///p, file://p)
        given = "/" + given.lstrip("/") if given.startswith("//") else given
        path = Path(given).expanduser().resolve()
        raise ConfigError(f"tracking URI {redact(uri)} is a path (MLflow's file store, which "
                          "sweeps do not use): give an SQLite store, e.g. "
                          f"sqlite:///{path if path.suffix == '.db' else path / 'mlflow.db'}, "
                          "or a server, to --tracking-uri (or MLFLOW_TRACKING_URI)")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise ConfigError(f"tracking URI {redact(uri)}: an SQLite store is sqlite:///PATH.db "
                          "(three slashes, then the file's path: sqlite:////abs/path.db for "
                          "an absolute one); fix --tracking-uri (or MLFLOW_TRACKING_URI)")
    if reason := unreachable_server(uri):
        fix = ("fix --tracking-uri (or MLFLOW_TRACKING_URI)" if "give http://" in reason else
               "start it, or point --tracking-uri (or MLFLOW_TRACKING_URI) at one that runs")
        raise ConfigError(f"tracking server {redact(uri)} cannot be reached: {reason}; {fix}")


def _store_exists(args, uri: str) -> None:
    """A misspelt SQLite path would otherwise be created, empty, by the first read."""
    from orchestrator.store import missing_sqlite, not_sqlite
    from trainer.errors import ConfigError

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


def _launch(args, uri: str) -> int:
    from orchestrator.spec import shadowed_overrides
    from orchestrator.spec_file import load_spec

    spec = load_spec(args.spec).with_overrides(args.overrides)
    return _run(spec, args, uri, notes=[*shadowed_overrides(spec), *_another_base(spec, uri)])


def _another_base(spec, uri: str) -> list[str]:
    """A launch under a sweep's name with another spec (other base overrides, grid, seeds)
    adds other trials to its experiment: allowed (a launch with overrides does it on
    purpose), but said, since `status` then follows the new spec and `fit` reads them all:
    the notes, said once the launch's checks have passed (before an error they were noise)."""
    from orchestrator.store import missing_sqlite
    from trainer.errors import ConfigError

    if missing_sqlite(uri):
        return []  # no store yet: a new sweep
    from orchestrator.sweep_record import stored_spec

    try:
        stored = stored_spec(uri, spec.name)
    except ConfigError:
        return []  # no such sweep yet
    before, now = set(stored.overrides), set(spec.overrides)

    from orchestrator.spec import root_path

    notes = []
    if root_path(stored.storage_root) != root_path(spec.storage_root):
        notes.append(f"sweep {spec.name} was launched before with storage_root "
                     f"{stored.storage_root}, now {root_path(spec.storage_root)}: its trials' "
                     "run directories and checkpoints are there, and an unfinished trial "
                     "would start over here")
    changes = [f"without {o}" for o in sorted(before - now)] + [
        f"now {o}" for o in sorted(now - before)]
    changes += [f"grid.{k}: {stored.grid.get(k, '(none)')} → {spec.grid.get(k, '(none)')}"
                for k in dict.fromkeys([*stored.grid, *spec.grid])
                if stored.grid.get(k) != spec.grid.get(k)]
    if stored.seeds != spec.seeds:
        changes.append(f"seeds: {list(stored.seeds)} → {list(spec.seeds)}")
    from trainer.reporting import redact

    if redact(str(stored.search)) != redact(str(spec.search)):  # (stored: its password masked)
        changes += _search_changes(stored.search, spec.search) or ["another search block"]
    settings = [f"{key}: {_setting(stored, key)} → {_setting(spec, key)}"
                for key in ("max_concurrent", "retries", "resources", "fuse", "share_prefix")
                if _setting(stored, key) != _setting(spec, key)]
    if settings and not changes:
        notes.append(f"sweep {spec.name} now runs with {'; '.join(settings)} (its trials stay "
                     "as they are; `sweep status`, `resume` and `extend` follow this spec)")
    changes += settings
    if changes and len(changes) > len(settings):
        notes.append(f"sweep {spec.name} was launched before with another spec "
                     f"({'; '.join(changes)}): its trials so far stay in its experiment, "
                     "`sweep status` and `sweep extend` follow this spec and `sweep fit` reads "
                     f"every trial; to add to the sweep use `sweep extend {spec.name} ...`, or "
                     "give this spec another name to keep the two apart"
                     + _narrower(stored, spec))
    return notes


def _narrower(stored, spec) -> str:
    """How a grid spec launched under a sweep's name narrows the stored one, when every one
    of its trials is the stored spec's: a relaunch of the first spec file after `sweep extend`
    (whose status then read 30 trials of 108). '' otherwise, or when either cannot expand."""
    if stored.optuna is not None or spec.optuna is not None:
        return ""
    from orchestrator.driver import prepare

    try:
        before = {t.trial_id for t in prepare(stored)[1]}
        now = {t.trial_id for t in prepare(spec)[1]}
    except Exception:  # noqa: BLE001 (a stored spec that no longer composes: the note as is)
        return ""
    if not now < before:
        return ""
    return (f". This spec holds {len(now)} of the sweep's {len(before)} trials: `sweep status` "
            f"and `extend` count these {len(now)} from now on (the other "
            f"{len(before) - len(now)} stay recorded, and `sweep fit` reads them); `sweep "
            f"resume {spec.name}` in place of this launch goes on with all {len(before)}")


def _setting(spec, key: str) -> str:
    """How a note shows one of the spec keys that say how its trials run, not which."""
    value = getattr(spec, key)
    if key == "resources":
        return ", ".join(f"{k}={v:g}" for k, v in dataclasses.asdict(value).items())
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def _search_changes(before, now) -> list[str]:
    """The search options a launch changes, `search.optuna.n_trials: 5 → 3` (a relaunch of
    the spec file after an extend lowered n_trials behind "another search block")."""
    from trainer.reporting import redact

    def options(search) -> dict:
        return dict(search["optuna"]) if isinstance(search, dict) and isinstance(
            search.get("optuna"), dict) else {}

    old, new = options(before), options(now)
    if not old or not new:
        return []
    return [f"search.optuna.{k}: {redact(str(old.get(k, '(none)')))} → "
            f"{redact(str(new.get(k, '(none)')))}"
            for k in dict.fromkeys([*old, *new]) if redact(str(old.get(k))) != redact(
                str(new.get(k)))]


def _run(spec, args, uri: str, based_on=None, notes: list[str] = ()) -> int:
    from orchestrator import commands

    # A flag is this command's: the stored spec keeps its own value for later commands.
    if getattr(args, "no_share", False):
        spec = spec.with_flag("share_prefix", False)
    if getattr(args, "fuse", None) is not None:
        spec = spec.with_flag("fuse", args.fuse)
    if getattr(args, "max_concurrent", None) is not None:
        spec = spec.with_flag("max_concurrent", args.max_concurrent)
    asked = "true" if spec.fuse is True else spec.fuse if (
        type(spec.fuse) is int and spec.fuse > 1) else None  # (True == 1: tested first)
    if asked is not None and spec.resources.world_size > 1:
        from orchestrator.fusion import fusion_off_reason

        notes = [*notes, f"fuse: {asked} fuses nothing here: {fusion_off_reason(spec)}"]
    if getattr(args, "dry_run", False) and not (args.address or os.environ.get("RAY_ADDRESS")):
        from orchestrator.driver import local_cluster, resource_problems

        for problem in resource_problems(spec, local_cluster()):  # a launch here refuses it
            print(f"note: on this machine the launch would refuse it: {problem} (a cluster's "
                  "nodes count with --address)", file=sys.stderr)
    if getattr(args, "dry_run", False) and spec.optuna is not None:
        for label, used, left, open_ in commands.search_dry_run(spec, tracking_uri=uri,
                                                                notes=notes):
            print(f"study {label}: {used} trial{'s' * (used != 1)} used, would ask {left} more"
                  + (f"; {open_} of those used never ended (interrupted): run again from "
                     "their checkpoints, or told from their record if they ended" if open_
                     else ""))
        from orchestrator.search_space import HALVING

        if spec.optuna.pruner == HALVING:
            print("halving: a budget above the first asks for the best of the one below as "
                  "its trials end, so its counts are for the results so far (a new trial "
                  "below that beats one that climbed sends another up)")
        from orchestrator.fusion import fusion_setting

        fuse = fusion_setting(spec)
        if fuse is True or (fuse is not False and fuse > 1):
            if fuse is True:
                from orchestrator.driver import local_cluster
                from orchestrator.fusion import at_once, searched_group_size
                from orchestrator.placement import Request

                res = spec.resources.per_trial()
                slots = at_once(spec, local_cluster().capacity(Request(gpus=res.gpus,
                                                                       cpus=res.cpus)))
                size = searched_group_size(True, points_left=spec.optuna.n_trials,
                                           slots=slots)
                most = (f"up to {size} points at once (its points over two rounds of the "
                        f"{slots} trials this machine runs at once)")
            else:
                size, most = fuse, f"up to {fuse} points at once"
            cap = spec.max_concurrent
            if cap and cap < 2:  # (a group's members count toward it: room for one point)
                print(f"no fused groups: max_concurrent {cap} leaves room for one point at a "
                      "time (each member counts)")
            else:
                if cap and cap < size:
                    most = f"up to {cap} points at once (max_concurrent {cap})"
                print(f"fused: each study asks {most} and trains them as one group"
                      + (f"; max_concurrent {cap} counts each member" if cap else ""))
        return 0
    if getattr(args, "dry_run", False):
        plan = commands.dry_run(spec, tracking_uri=uri, notes=notes)
        for trial, action in plan:
            print(f"{action:<18} {trial.trial_id[:12]}  {trial.label}")
        todo = sum(action.startswith("run") for _, action in plan)
        held = sum(action.startswith("wait") for _, action in plan)
        print(f"{len(plan)} trial{'s' * (len(plan) != 1)}: {len(plan) - todo - held} done, "
              f"{todo} would run"
              + (f", {held} running under another driver" if held else ""))
        from orchestrator.families import describe, plan_sharing

        trials = [trial for trial, _ in plan]
        to_run = [t for t, action in plan if action.startswith("run")]
        sharing = plan_sharing(trials, share=spec.share_prefix)
        for line in describe(sharing, trials, to_run={t.trial_id for t in to_run}):
            print(line)
        from orchestrator.fusion import fusion_off_reason, fusion_setting

        if fusion_setting(spec) and to_run:
            print_fusion(spec, to_run, sharing)
        elif len(to_run) > 1:
            print(f"no fused groups: {fusion_off_reason(spec)}")
        return 0
    address = args.address or os.environ.get("RAY_ADDRESS")
    outcome = commands.launch(spec, tracking_uri=uri, address=address,
                              progress=sys.stdout.isatty(), based_on=based_on, notes=notes)
    ran = outcome.ran.values()
    summary = ", ".join(f"{sum(s == k for s in ran)} {k}" for k in sorted(set(ran)))
    print(f"sweep {spec.name}: {outcome.trials} trial{'s' * (outcome.trials != 1)}, "
          f"{outcome.already_done} already done"
          + (f", ran {len(outcome.ran)} ({summary})" if outcome.ran else
             ", stopped before any trial ran" if outcome.interrupted else ", nothing to run")
          + (f", {len(outcome.found_ended)} found ended by another launch"
             if outcome.found_ended else "")
          + (f", {not_started} not started" if outcome.interrupted and outcome.ran
             and (not_started := outcome.trials - outcome.already_done - len(outcome.ran)
                  - len(outcome.found_ended)) > 0 else ""))
    if outcome.interrupted:
        print(f"sweep {spec.name} stopped before its end (Ctrl-C or `sweep cancel`): nothing "
              f"done is lost, `sweep resume {spec.name}` goes on")
    import shlex

    from orchestrator.tracking import redact

    name = shlex.quote(spec.name)
    print(f"monitor: sweep status {name}   |   UI: sweep ui {name}  "
          f"(store {redact(uri)})")
    from trainer.schema import DONE, PRUNED

    # a pruned trial is a search working as meant, not a failure
    ended = [*ran, *outcome.found_ended.values()]
    return 130 if outcome.interrupted else (0 if all(s in (*DONE, PRUNED) for s in ended)
                                            else 1)


def _list(args, uri: str) -> int:
    import json

    from orchestrator.status import format_sweeps, sweeps

    rows = sweeps(uri)
    print(json.dumps(rows, indent=2) if args.json else format_sweeps(rows))
    return 0


def _status(args, uri: str) -> int:
    from orchestrator.status import as_json, format_status, status

    report = status(uri, args.name)
    print(as_json(report) if args.json else format_status(report))
    return 0


def _resume(args, uri: str) -> int:
    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    if args.overrides:
        from orchestrator.spec import refuse_spec_key

        for arg in args.overrides:  # (a spec key given as one: where it goes, not extend)
            refuse_spec_key(*arg.partition("=")[::2])
        raise ConfigError(f"sweep resume runs sweep {args.name} as it was launched, without "
                          f"{' '.join(args.overrides)}: to add values use `sweep extend "
                          f"{args.name} {' '.join(args.overrides)}`; for another base, launch "
                          "a spec under another name")
    return _run(stored_spec(uri, args.name), args, uri)


def _extend(args, uri: str) -> int:
    from orchestrator.extend import extended
    from orchestrator.sweep_record import stored_spec

    stored = stored_spec(uri, args.name)
    return _run(extended(stored, args.overrides), args, uri, based_on=stored)


def _cancel(args, uri: str) -> int:
    from orchestrator.cancel import NotRunning, cancel

    try:
        marked = cancel(uri, args.name)
    except NotRunning as ended:
        print(f"sweep {args.name} is not running ({ended.status}): nothing to cancel")
        return 0
    if marked is None:
        print(f"sweep {args.name}: cancel requested; its driver is stopping its trials "
              f"(`sweep status {args.name}` says when it has)")
        return 0
    print(f"sweep {args.name}: cancel requested" + (f"; {marked} orphaned trials marked "
                                                      "interrupted" if marked else ""))
    return 0


def _ui(args, uri: str) -> int:
    from orchestrator.tracking import redact

    served = uri.startswith(("http://", "https://"))  # a tracking server is its own UI
    url = redact(uri).rstrip("/") if served else f"http://127.0.0.1:{args.port}"
    if args.name:
        from mlflow import MlflowClient

        _known_sweep(uri, args.name)
        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(args.name)
        url += f"/#/experiments/{exp.experiment_id}"
    if served:
        print(f"MLflow UI of the tracking server: {url}")
        return 0
    import socket

    from trainer.errors import ConfigError

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            raise ConfigError(f"--port {args.port} is in use on 127.0.0.1; give another, e.g. "
                              f"--port {args.port + 1}") from None
    print(f"starting the MLflow UI for {uri} ...", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(args.port)]
    # Its own process group, ended with this command whatever ends it (Ctrl-C, a SIGTERM
    # from a supervisor or `timeout`): uvicorn's workers would otherwise outlive it.
    server = subprocess.Popen(cmd, start_new_session=True)

    def stop(*_):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        # The server takes seconds to answer; the URL is printed once it does, so that a
        # user (or a script) who opens it at once finds the UI, not a refused connection.
        if _answers(server, args.port):
            print(f"MLflow UI for {uri}: {url}  (Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        stop()
        server.wait()
        return 0


def _answers(server: subprocess.Popen, port: int, limit_s: float = 120.0) -> bool:
    """True once 127.0.0.1:`port` accepts a connection; False when `server` exits first."""
    import socket
    import time

    deadline = time.monotonic() + limit_s
    while server.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.25)
    return server.poll() is None


def _fit(args, uri: str) -> int:
    import json
    from pathlib import Path

    from fitter.data import read_csv
    from fitter.errors import FitError
    from fitter.fit import fit_runs, format_fit, write_fit
    from fitter.groups import parse_group
    from fitter.mlflow_io import load_runs, log_fit

    if (args.name is None) == (args.from_csv is None):
        raise FitError("sweep fit needs either a sweep NAME or --from-csv FILE (not both); "
                       "e.g. `sweep fit demo` or `sweep fit --from-csv runs.csv --law lr`.")
    if args.pool and args.group:
        raise FitError("--pool fits one law across every group and --group fits one group: "
                       "give one of them.")
    label = args.name or Path(args.from_csv).stem
    if args.name:
        _known_sweep(uri, args.name)
        runs = load_runs(uri, args.name)
        not_done = _warn_unfinished(uri, args.name)
    else:
        runs, not_done = read_csv(args.from_csv), 0
    laws = (args.law,) if args.law else None
    group = parse_group(args.group)
    out = _out_dir(args.out)  # (checked once the runs are found, before the fit)
    result = fit_runs(runs, laws=laws, n_boot=args.n_boot, pool=args.pool, group=group)
    if args.pool and not result.pooled:
        print("note: --pool changes nothing here: no key (model.param, the data, ...) splits "
              "these runs into groups, so their laws are fitted across all of them anyway",
              file=sys.stderr)
    # What was fitted: every group, one (--group) or all pooled (--pool); a fit of one group
    # or pooled goes to its own folder by default, not over the full fit's
    selection = ",".join(f"{k}={v}" for k, v in group.items()) or (
        "pooled" if result.pooled else "")
    if args.law:  # (a fit of one law, too: it replaced the full fit's fit.json and plots)
        selection = ",".join(filter(None, [selection, f"law={args.law}"]))
    default = Path("outputs") / "fit" / label
    out = out or (default / selection.replace("/", "_") if selection else default)
    doc = write_fit(result, out, sweep=label, next_trials=_next_n_trials(uri, args.name),
                    selection={"group": group, "pooled": result.pooled})
    if args.name and doc["next_grid"] and (added := _extension_size(uri, args.name,
                                                                    doc["next_grid"])):
        doc["next_grid_trials"] = added
    if args.name:
        doc["fit_run_id"] = log_fit(uri, args.name, out, doc)
        # (the file on disk names the run that holds its copy; that copy is the fit as it was)
        (out / "fit.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_fit(doc, recorded=args.name is not None, not_done=not_done))
        print(f"wrote {out / 'fit.json'} and {len(doc['plots'])} "
              f"plot{'s' * (len(doc['plots']) != 1)}"
              + (f"; MLflow fit run {doc['fit_run_id']}" if args.name else ""))
    return 0


def _out_dir(text: str | None):
    """`--out` as a folder that can be made or written, checked before anything is fitted."""
    from pathlib import Path

    from fitter.errors import FitError

    if text is None:
        return None
    from trainer.paths import folder_problem

    if reason := folder_problem(text):
        raise FitError(f"--out {text}: {reason}; give a folder you can write fit.json and the "
                       "plots to.")
    return Path(text)


def _known_sweep(uri: str, name: str) -> None:
    """An unknown name: the sentence every command says, with the sweeps the store has."""
    from mlflow import MlflowClient

    from orchestrator.sweep_record import parent_run

    parent_run(MlflowClient(tracking_uri=uri), name)


def _warn_unfinished(uri: str, name: str) -> int:
    """A fit of a sweep with trials not done (pending, running, interrupted, failed) sees only
    the ended ones: said on stderr, counted as `sweep status` counts them, with what finishes
    the others. The number of those that its driver, or a `sweep resume`, will still end:
    trials of its spec pending, running or interrupted, and failed ones of a grid that did not
    fail on a config error (0 when none; not those of an earlier spec, which resume leaves)."""
    from mlflow import MlflowClient

    from orchestrator.status import trial_counts
    from orchestrator.sweep_record import live_status, parent_run, stored_spec
    from trainer.schema import (
        DONE,
        FAILED,
        INTERRUPTED,
        PRUNED,
        RUNNING,
        TRIAL_ERROR_TAG,
        recorded_trials,
    )

    states = recorded_trials(uri, name)
    status, gone = live_status(parent_run(MlflowClient(tracking_uri=uri), name))
    searched = False
    try:
        spec = stored_spec(uri, name)
        searched = spec.optuna is not None
        counts, _, ids = trial_counts(uri, spec, states, gone)
    except Exception:  # noqa: BLE001 (a note: without the spec, the trials recorded)
        counts, ids = {}, []

    def config_error(trial_id: str) -> bool:
        state = states.get(trial_id)
        return state is not None and state["status"] == FAILED and state["run"].data.tags.get(
            TRIAL_ERROR_TAG, "").startswith("ConfigError")

    finishable = sum(counts.get(s, 0) for s in ("pending", RUNNING, INTERRUPTED)) + (
        0 if searched else counts.get(FAILED, 0) - sum(map(config_error, ids)))
    # (and the trials of an earlier spec: the fit reads every trial of the experiment)
    earlier = 0
    for trial_id, state in states.items():
        if trial_id not in set(ids):
            s = INTERRUPTED if state["status"] == RUNNING and gone is not None else \
                state["status"]
            counts[s] = counts.get(s, 0) + 1
            earlier += s not in (*DONE, PRUNED)
    open_ = {s: n for s, n in counts.items() if s not in (*DONE, PRUNED)}
    refused = sum(state["status"] in open_ and state["run"].data.tags.get(
        TRIAL_ERROR_TAG, "").startswith("ConfigError") for state in states.values())
    not_done = sum(open_.values())
    if open_ and refused == not_done:  # resume would fail them the same way
        print(f"note: {refused} of sweep {name}'s trials failed on a config error (`sweep "
              f"status {name}` shows it): this fit has only the ended ones; `sweep resume` "
              "would fail them the same way: fix what the error names in the spec and "
              "launch it again", file=sys.stderr)
        return 0
    if open_:
        counts_text = ", ".join(f"{n} {s}" for s, n in sorted(open_.items()))
        if searched and set(open_) == {"failed"}:
            how = (f"a searched trial that failed counts toward its study's n_trials (resume "
                   f"does not ask it again): `sweep extend {name} search.optuna.n_trials=N` "
                   "asks for more")
        elif not finishable:
            how = ("they are trials of an earlier spec of the sweep, which `sweep resume` "
                   "does not run (launch that spec again to finish them)")
        else:
            how = ("its driver is running them: wait for it (`sweep status "
                   f"{name}`), then fit again" if status == RUNNING else
                   f"`sweep resume {name}` finishes them")
            how += (f" ({earlier} of an earlier spec it does not run)" if earlier else "")
            how += ("; a failed searched trial counts toward n_trials and is not asked again"
                    if searched and "failed" in open_ else "")
        print(f"note: {not_done} of sweep {name}'s trials are not done ({counts_text}): "
              f"this fit has only the ended ones; {how}", file=sys.stderr)
    return finishable



def print_fusion(spec, trials, sharing) -> None:
    """The fused groups that the trials to run, and the trunks of their families (`sharing`),
    would form on this machine (a cluster may hold more trials at once, and then makes
    smaller groups when `fuse: true`)."""
    from orchestrator.driver import local_cluster
    from orchestrator.families import branch_tokens
    from orchestrator.fusion import at_once, fusion_setting, plan_fusion
    from orchestrator.fusion import describe as describe_groups
    from orchestrator.placement import Request
    from orchestrator.sharing import plan_trunk_groups
    from trainer import branching
    from trainer.lease import current_holder

    res = spec.resources.per_trial()
    slots = at_once(spec, local_cluster().capacity(Request(gpus=res.gpus, cpus=res.cpus)))
    fuse = fusion_setting(spec)
    pending = []  # each family's trunk to train, to the branch points it has not passed
    for family in sharing.families:
        directory = branching.trunk_dir(spec.storage_root, family.trunk_id)
        if current_holder(directory) is not None:
            continue  # another driver's worker trains it
        index = branching.read_index(directory)
        ids = {m.trial_id for m in family.members}
        # (a point under one batch needs no trunk: the branch starts from step 0)
        points = {p for t in trials if t.trial_id in ids
                  and (p := branch_tokens(t.cfg)) >= family.batch_tokens
                  and not branching.passed(index, p)}
        if points:
            pending.append((family, tuple(sorted(points))))
    units = plan_trunk_groups(pending, storage_root=spec.storage_root, fuse=fuse, slots=slots)
    fused_trunks = [u for u in units if len(u) > 1]
    for unit in fused_trunks:
        print(f"fused {len(unit)} trunks in one task: "
              + ", ".join(f.trunk_id[:12] for f in unit))
    groups, alone = plan_fusion([t for t in trials if sharing.family_of(t.trial_id) is None],
                                fuse=fuse, slots=slots)
    for line in describe_groups(groups):
        print(line)
    if groups or alone:
        print(f"{len(groups)} fused group{'s' * (len(groups) != 1)}, "
              f"{len(alone)} trial{'s' * (len(alone) != 1)} alone")
    if units:
        fused, total = sum(map(len, fused_trunks)), sum(map(len, units))
        print(f"{total} trunk{'s' * (total != 1)} to train: "
              + (f"{fused} in {len(fused_trunks)} fused group{'s' * (len(fused_trunks) != 1)}, "
                 f"{len(units) - len(fused_trunks)} alone; a group's budgets of one size fuse "
                 "as it releases them" if fused else "each alone"))
    # (fusion on, but a config that cannot fuse at all: said, as sharing says why it does not)
    from trainer.fusable import fusion_problems

    cannot = [problem for cfgs in ([u[0].members[-1].cfg for u in units] if units and not
                                   fused_trunks and len(units) > 1 else [],
                                   [t.cfg for t in alone] if not groups and len(alone) > 1
                                   else [])
              for problem in (fusion_problems(cfgs[:1]) if fuse and cfgs else [])]
    for problem in dict.fromkeys(cannot):
        print(f"nothing fuses: {problem}")


def _stored_search(uri: str, name: str):
    """The Optuna search of a stored sweep, or None: a grid, or runs logged without a sweep
    spec (the fitter reads any experiment's runs)."""
    from mlflow.exceptions import MlflowException

    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    try:
        return stored_spec(uri, name).optuna
    except (ConfigError, MlflowException):
        return None


def _extension_size(uri: str, name: str, overrides: list[str]) -> int | None:
    """How many trials `sweep extend NAME OVERRIDES` (a fit's `next_grid`: LRs to add to a
    grid) would add: every new LR at every point of the other axes and seed. None where that
    cannot be read (a searched sweep, a spec that no longer parses)."""
    import math

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from orchestrator.sweep_record import stored_spec
    from orchestrator.trials import grid_axes

    try:
        spec = stored_spec(uri, name)
        axes, problems = grid_axes(spec)
        (override,) = OverridesParser.create().parse_overrides(list(overrides))
        key = override.key_or_group
        if spec.optuna is not None or problems:
            return None
        # (an LR the spec fixes in its overrides becomes an axis of its value and these)
        have = {float(v) for v in axes.get(key, [])} or {
            float(o.split("=", 1)[1]) for o in spec.overrides if o.split("=", 1)[0] == key}
        new = [v for v in override.sweep_string_iterator() if float(v) not in have]
    except Exception:  # noqa: BLE001 (a count beside a hint: without it, the hint stands)
        return None
    rest = math.prod(len(values) for k, values in axes.items() if k != key)
    return len(new) * rest * len(spec.seeds)


def _next_n_trials(uri: str, name: str | None) -> int | None:
    """For a searched sweep, the `n_trials` a fit suggests when an optimum is not bracketed:
    twice the trials, and under halving at least enough for three LRs in the top rung (twice
    8 trials halving over four budgets still left two there). None for a grid."""
    from orchestrator.search_space import plan_search
    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    search = name and _stored_search(uri, name)
    if not search:
        return None
    more = 2 * search.n_trials
    try:
        rungs = plan_search(stored_spec(uri, name)).rungs
    except ConfigError:
        rungs = None
    while rungs is not None and rungs.nominal(more, len(rungs.budgets) - 1) < 3:
        more += 1
    return more


def _recommend(args, uri: str) -> int:
    import json

    from fitter.data import read_csv
    from fitter.errors import FitError
    from fitter.fit import fit_runs
    from fitter.groups import group_keys, parse_group
    from fitter.mlflow_io import load_runs
    from fitter.recommend import format_recommendation, recommend

    if (args.name is None) == (args.from_csv is None):
        raise FitError("sweep recommend needs either a sweep NAME or --from-csv FILE (not "
                       "both); e.g. `sweep recommend demo --params 1e9 --tokens 2e10`.")
    group = parse_group(args.group)
    if args.name:
        _known_sweep(uri, args.name)
        runs = load_runs(uri, args.name)
        _warn_unfinished(uri, args.name)
    else:
        runs = read_csv(args.from_csv)
    # A key that splits the runs into groups chooses one group's laws; any other key that
    # varies (optim.timescale=3, model.depth=4) fits the laws of those runs only, as `sweep
    # fit --group` does (it was refused: "one set of laws for all its runs; drop --group").
    if set(group) <= set(group_keys(runs)):
        result = fit_runs(runs, n_boot=args.n_boot)
        rec = recommend(result, params=args.params, tokens=args.tokens, batch=args.batch,
                        group=group)
    else:
        result = fit_runs(runs, n_boot=args.n_boot, group=group)
        try:
            rec = recommend(result, params=args.params, tokens=args.tokens, batch=args.batch)
        except FitError as err:  # (several groups left: the choice it asks for goes beside
            # these --group, which following it alone dropped)
            if "choose one with --group" not in str(err):
                raise
            from fitter.groups import label

            raise FitError(f"{str(err).rstrip('.')}, beside --group {label(group)}.") from None
        rec["group"] = {**group, **rec["group"]}
    print(json.dumps(rec, indent=2) if args.json else format_recommendation(rec))
    return 0


COMMANDS = {"launch": _launch, "list": _list, "status": _status, "resume": _resume,
            "extend": _extend, "cancel": _cancel, "ui": _ui, "fit": _fit,
            "recommend": _recommend}


if __name__ == "__main__":
    sys.exit(main())
