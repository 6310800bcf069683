"""`python -m trainer [hydra overrides]`: one training run from the command line."""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager

from trainer.errors import ConfigError, Terminated, stopped_by

USAGE = """usage: python -m trainer [KEY=VALUE ...] [--cfg] [--demo]

Train one proxy model. Arguments are Hydra overrides of conf/config.yaml, e.g.
  python -m trainer model=small schedule=wsd optim.lr=0.003 train.tokens=2_000_000
Groups: model (tiny, small, gpt124m), data (pystdlib, synthetic, hf, files),
optim (adamw), schedule (power, wsd, cosine, constant, linear).
  --cfg    print the resolved config and exit
  --demo   train the small demo run on the embedded corpus
Re-running the same command resumes the run, or prints its result if it has ended."""

DEMO_OVERRIDES = ["model=tiny", "train.tokens=1_000_000", "train.batch_size=16",
                  "train.seq_len=128", "optim.lr=0.01", "schedule=power"]


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, train; user errors print one line per problem and return 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(USAGE)
        return 0
    flags = {a for a in args if a.startswith("--")}
    unknown = flags - {"--cfg", "--demo"}
    if unknown:
        print(f"error: unknown option {sorted(unknown)[0]}; see python -m trainer --help",
              file=sys.stderr)
        return 2
    overrides = given = [a for a in args if not a.startswith("--")]
    if "--demo" in flags:
        overrides = DEMO_OVERRIDES + overrides
    try:
        # (inside: it imports torch, seconds in which a Ctrl-C printed a traceback)
        from trainer.distributed import launched_by_torchrun

        if not launched_by_torchrun():  # (torchrun's agent stops its ranks itself)
            signal.signal(signal.SIGTERM, _terminated)
        return _run(overrides, print_only="--cfg" in flags, given=given)
    except ConfigError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except BaseException as err:
        stop = stopped_by(err)
        if stop is None:
            from trainer.distributed import RankFailed  # (what raised it imported it)

            if isinstance(err, RankFailed):
                print(f"error: {err}", file=sys.stderr)
                return 1
            raise
        said = "terminated (SIGTERM)" if stop is Terminated else "interrupted"
        # (under torchrun, once: each rank said it; a stray RANK alone silences nothing.
        # Not `launched_by_torchrun`: an import here could meet the Ctrl-C still in flight)
        if "WORLD_SIZE" not in os.environ or os.environ.get("RANK", "0") == "0":
            print(f"{said}: re-run the same command to resume from the last checkpoint",
                  file=sys.stderr)
        return 128 + signal.SIGTERM if stop is Terminated else 130


def _record_ended(cfg, paths, run_id: str, stored: dict) -> bool:
    """Record a run that ended in `tracking.uri` from its files (`metrics.jsonl`, its summary)
    when the store lacks its end: the command that trained it had no `tracking.uri`, or
    another. Whether it wrote."""
    from mlflow import MlflowClient

    from trainer import schema
    from trainer.identity import flatten
    from trainer.reporting import MlflowReporter

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        found = client.search_runs([exp.experiment_id], schema.trial_filter(run_id),
                                   max_results=1)
        if found and found[0].data.tags.get(schema.TRIAL_STATUS_TAG) in schema.DONE:
            return False
    reporter = MlflowReporter(cfg.tracking.uri, cfg.tracking.experiment, history=paths.metrics)
    derived = {k: v for k, v in stored.items() if k.startswith("derived.")}
    reporter.start(run_id=run_id, params={**flatten(cfg), **derived, "trial.id": run_id},
                   resumed_step=0)  # (a resumed start sends the history the store lacks)
    reporter.finish(status=stored["status"], summary=stored)
    return True


def _given_notes(overrides: list[str], cfg, noted: list[str]) -> list[str]:
    """What the command line gave that no run of this config reads (it only changes the run
    id: the same model trains again under another), and keys given twice (the last wins);
    `noted` is what `notes(cfg)` said already."""
    from trainer.validation import unread

    keys = [o.partition("=")[0].lstrip("+") for o in overrides
            if "=" in o and not o.startswith("~")]
    out = [f"{k} is given {keys.count(k)} times: the run takes the last, "
           f"{next(o for o in reversed(overrides) if o.partition('=')[0].lstrip('+') == k)}"
           for k in dict.fromkeys(k for k in keys if keys.count(k) > 1)]
    why = unread(cfg)
    said = {note.partition("=")[0] for note in noted}  # (data.split: said there already)
    return out + [f"{k} is not read here: {why[k]}; it only changes the run id (the same model "
                  "under another)" for k in dict.fromkeys(keys) if k in why and k not in said]


def _each_problem(overrides: list[str]) -> list[str]:
    """Hydra stops at the first override it cannot compose: composed one at a time, every
    one that fails alone is said at once (as a sweep says them); none when only their
    combination fails."""
    from trainer.compose import compose

    found = []
    for override in overrides:
        try:
            compose([override])
        except ConfigError as err:
            found += [p for p in err.problems if p not in found]
    return found


def _terminated(signum, frame) -> None:
    raise Terminated


def _run(overrides: list[str], *, print_only: bool, given: list[str] = ()) -> int:
    """`given`: what the command line gave (the overrides but --demo's), for its notes."""
    from trainer.compose import compose
    from trainer.identity import config_id, flatten
    from trainer.loop import RunPaths, read_summary, run
    from trainer.reporting import redact
    from trainer.schema import DONE
    from trainer.validation import check

    try:
        cfg = compose(overrides)
    except ConfigError as err:
        raise ConfigError(_each_problem(overrides) or err.problems) from None
    if print_only:
        for key, value in flatten(cfg).items():
            print(redact(f"{key}={value}"))
        from trainer.validation import empty_root_problems, problems

        # (it prints; a run would refuse these)
        for problem in [*problems(cfg, network=False), *empty_root_problems(str(cfg.storage_root))]:
            print(f"note: this config cannot run: {problem}", file=sys.stderr)
        from trainer.validation import notes

        noted = notes(cfg)
        for note in [*noted, *_given_notes(list(given), cfg, noted)]:
            print(f"note: {note}", file=sys.stderr)
        run_id = config_id(cfg)  # (on stderr: stdout stays the config, one key a line)
        print(f"run id {run_id[:12]}: {RunPaths.for_config(cfg, run_id).run_dir}",
              file=sys.stderr)
        return 0
    check(cfg)
    from trainer.distributed import launched_by_torchrun

    if launched_by_torchrun() and (env := int(os.environ["WORLD_SIZE"])) != cfg.train.world_size:
        # (a config error, before the run's folder: it was exit 1 after a lease was made)
        raise ConfigError([f"train.world_size={cfg.train.world_size} but torchrun launched "
                           f"{env} processes (WORLD_SIZE={env}): give train.world_size={env}, "
                           f"or torchrun --nproc-per-node {cfg.train.world_size}"])
    from trainer.loop import another_runs_files
    from trainer.validation import notes

    paths = RunPaths.for_config(cfg, config_id(cfg))
    if problem := another_runs_files(cfg, paths, config_id(cfg)):  # (before reading its files)
        raise ConfigError([problem])
    # Under torchrun every rank runs this: rank 0 alone says what the run is and where it went.
    speaks = not launched_by_torchrun() or os.environ["RANK"] == "0"
    noted = notes(cfg) if speaks else []
    for note in [*noted, *_given_notes(list(given), cfg, noted)] if speaks else []:
        print(f"note: {note}", file=sys.stderr)
    stored = read_summary(paths)
    if speaks and stored is not None and stored.get("status") in DONE:
        # (--help promised its result: the status alone was printed)
        loss = stored.get("final/eval_loss")
        print(f"this run has already ended ({stored['status']}"
              + (f": final eval loss {loss:.4f} after {stored.get('final/tokens', 0):,} tokens"
                 if isinstance(loss, float) else "") + "); nothing to train.")
    with _lease(paths.run_dir, config_id(cfg)):
        result = run(cfg)
    if not speaks:
        return 0
    print(f"run directory: {result.run_dir}")
    print(f"  metrics  {paths.metrics}\n  summary  {paths.summary}")
    if cfg.tracking.uri and stored is not None and stored.get("status") in DONE:
        wrote = _record_ended(cfg, paths, config_id(cfg), stored)
        print(f"  MLflow   {redact(cfg.tracking.uri)} (experiment {cfg.tracking.experiment}): "
              + ("the ended run recorded from its files" if wrote
                 else "its record was there already"))
    elif cfg.tracking.uri:
        print(f"  MLflow   {redact(cfg.tracking.uri)} (experiment {cfg.tracking.experiment})")
    return 0


@contextmanager
def _lease(run_dir, run_id: str):
    """The run's lease (`trainer.lease`), as a sweep's worker takes a trial's: the same
    command typed twice at once resumed the first one's checkpoints while it trained, and
    both wrote the run's history. Under torchrun rank 0 holds it for the run."""
    from trainer.distributed import launched_by_torchrun
    from trainer.lease import Lease

    if launched_by_torchrun() and os.environ.get("RANK") != "0":
        yield
        return
    lease = Lease.acquire(run_dir, sweep="python -m trainer", driver_pid=os.getpid())
    if not isinstance(lease, Lease):
        since = time.strftime("%H:%M:%S", time.localtime(lease.since))
        who = (f"sweep {lease.sweep}'s worker" if lease.sweep != "python -m trainer"
               else "another `python -m trainer`")
        where = f" (pid {lease.pid} on {lease.host}, since {since})" if lease.pid else ""
        raise ConfigError([f"run {run_id[:12]} is being trained by {who}{where}: wait for it "
                           "to end, then run this command again for its result"])
    with lease:
        yield


if __name__ == "__main__":
    code = main()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # a rank under torchrun
        # As trainer.rank does: out without the interpreter's teardown, where the collective
        # backend's destructors now and then aborted a rank that had finished its work.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
