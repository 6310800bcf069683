"""Runs of a sweep as one table, whatever they came from.

The fitter works on a `Runs` table with one row per run and canonical columns:

    run, status, lr, loss, N (non-embedding params), D (training tokens), B (batch tokens per
    optimizer step), wd (weight decay λ), tau (the timescale τ the run was given, NaN when it
    was given λ), seq_len

plus the other config keys that vary across the sweep (model.param, optim.timescale, ...).
Those, with N, D, B and wd, identify a *slice*: runs that differ only in learning rate. A sweep
that sets `optim.timescale` instead of λ derives λ = B/(η·τ·D) from each run's LR, so λ differs
within a slice: there the timescale key identifies the slice and wd does not.

Two spellings are accepted: MLflow's (`params.optim.lr`, `metrics.final/eval_loss`,
`tags.trial.status`, as in `mlflow.search_runs`) and short names (`N`, `D`, `B`, `lr`, `wd`,
`loss`, optionally `status`, `run`, `C` for training FLOPs, giving D = C / (6N), and other
config keys by their dotted names, e.g. `model.param`, which then split the laws into groups).
A CSV that also has a `step` column holds loss histories: one row per (run, step, loss), the
run's other columns repeated on each row; its final loss is the loss at its last step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fitter.errors import FitError
from trainer.schema import (
    FINAL_EVAL_LOSS,
    KIND_TAG,
    KIND_TRIAL,
    PARAM_BATCH_SIZE,
    PARAM_BATCH_TOKENS,
    PARAM_EFFECTIVE_WEIGHT_DECAY,
    PARAM_LR,
    PARAM_N_PARAMS,
    PARAM_SEQ_LEN,
    PARAM_TIMESCALE,
    PARAM_TOKENS,
    PARAM_WEIGHT_DECAY,
    TRIAL_ID_TAG,
    TRIAL_STATUS_TAG,
)

CANONICAL = ("N", "D", "B", "lr", "wd", "loss")
PARAM_KEY = "model.param"
"""Kept in the table even where one parametrization is all the runs have (the figures draw a
published LR law only beside runs of the parametrization it was fitted in)."""
BASE_WIDTH_KEY = "model.base_width"
"""Kept likewise: a muP LR holds at its base width only, which `recommend` names."""
BATCH_SCHEDULE_KEY = "train.batch_schedule"
"""Kept likewise: a run whose batch grows (`norm_test`) records its starting batch as B, which
the batch and cbs laws cannot read as its batch."""
KEPT_KEYS = (PARAM_KEY, BASE_WIDTH_KEY, BATCH_SCHEDULE_KEY)
AXES = ("N", "D", "B")
MLFLOW_KEYS = {
    "N": PARAM_N_PARAMS, "D": PARAM_TOKENS, "B": PARAM_BATCH_TOKENS,
    "lr": PARAM_LR, "wd": PARAM_WEIGHT_DECAY, "loss": FINAL_EVAL_LOSS,
}
"""Short name → MLflow key, for messages."""
ALIASES = {"Model Size": "N", "Training FLOP": "C", "run_id": "run", TRIAL_STATUS_TAG: "status"}
# Config keys that never define a slice: identity, paths, cadence, and keys whose effect is
# already carried by N, D, B or lr.
_NOT_SLICE_PREFIXES = ("derived.", "tracking.", "log", "trial.")
_NOT_SLICE_KEYS = {"optim.lr", "seed", "storage_root", "run_dir", "checkpoint_dir",
                   "data.cache_dir", "data.paths"}


@dataclass(frozen=True)
class Runs:
    """Every run of a sweep, normalised; see the module docstring for the columns."""

    table: pd.DataFrame
    slice_keys: tuple[str, ...]
    """Columns that, with `lr`, identify a run's slice (only those that vary)."""
    source: str
    """Where the runs came from, for messages (`sweep demo`, `runs.csv`)."""
    histories: dict[str, np.ndarray] = field(default_factory=dict)
    """run → array of shape (k, 2): optimizer step, loss."""

    @property
    def usable(self) -> pd.DataFrame:
        """Finished runs with a finite loss, and diverged runs."""
        t = self.table
        return t[(t.status == "diverged") | ((t.status == "finished") & np.isfinite(t.loss))]

    @property
    def finished(self) -> pd.DataFrame:
        """Finished runs with a finite loss."""
        t = self.table
        return t[(t.status == "finished") & np.isfinite(t.loss)]


def from_mlflow_frame(frame: pd.DataFrame, *, source: str) -> Runs:
    """Normalise a `mlflow.search_runs` frame (or a CSV export of one). An export of a whole
    experiment holds the sweep's parent, trunk and fit runs too: only trial runs are runs."""
    kind = f"tags.{KIND_TAG}"
    if kind in frame.columns and (frame[kind] == KIND_TRIAL).any():
        frame = frame[frame[kind] == KIND_TRIAL]
    frame = _one_run_per_trial(frame, source)
    params = {c[len("params."):]: frame[c] for c in frame.columns if c.startswith("params.")}
    table = pd.DataFrame(index=frame.index)
    table["run"] = _first(frame, ["run_id", f"tags.{TRIAL_ID_TAG}"],
                          default=frame.index.astype(str))
    table["status"] = _first(frame, [f"tags.{TRIAL_STATUS_TAG}"], default=None)
    table["lr"] = _number(params.get(PARAM_LR), frame.index)
    table["loss"] = _number(frame.get(f"metrics.{FINAL_EVAL_LOSS}"), frame.index)
    table["N"] = _number(params.get(PARAM_N_PARAMS), frame.index)
    table["D"] = _number(params.get(PARAM_TOKENS), frame.index)
    table["seq_len"] = _number(params.get(PARAM_SEQ_LEN), frame.index)
    batch = _number(params.get(PARAM_BATCH_TOKENS), frame.index)
    from_seqs = _number(params.get(PARAM_BATCH_SIZE), frame.index) * table["seq_len"]
    table["B"] = batch.fillna(from_seqs)
    table["wd"] = _number(params.get(PARAM_EFFECTIVE_WEIGHT_DECAY), frame.index).fillna(
        _number(params.get(PARAM_WEIGHT_DECAY), frame.index))
    table["tau"] = _number(params.get(PARAM_TIMESCALE), frame.index)
    if "seed" in params:  # (not a slice key: replicates of a point, see `slices.seed_offsets`)
        table["seed"] = _labels(params["seed"])
    # A trial that has not started yet has no params: it must not make every key look varied.
    recorded = table["lr"].notna() if table["lr"].notna().any() else slice(None)
    # (sorted: the store's column order varies, and the slice labels' order flipped between
    # two fits of one sweep)
    extra = sorted(k for k, v in params.items()
                   if _slice_key(k) and v[recorded].nunique(dropna=False) > 1)
    for key in extra:
        table[key] = _labels(params[key])
    for key in KEPT_KEYS:  # (one parametrization, one base width: said where they matter)
        if key in params and key not in extra:
            table[key] = _labels(params[key])
    return _finish(table, extra, source)


def _one_run_per_trial(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """One run per trial (`trial.id` tag): a trial recorded twice in a store (a run copied in
    from another store, one re-recorded by hand) counted as two replicates, which narrowed
    its slice's interval by sqrt(2) where the two agreed, and moved its optimum where a stale
    one did not. The trial's latest ended run is kept (else its latest), and said."""
    import sys

    column = f"tags.{TRIAL_ID_TAG}"
    if column not in frame.columns:
        return frame
    ids = frame[column].astype("string").str.strip()
    named = ids.notna() & (ids != "")
    twice = named & ids.duplicated(keep=False)
    if not twice.any():
        return frame
    status = frame.get(f"tags.{TRIAL_STATUS_TAG}", pd.Series(None, index=frame.index))
    when = pd.Series(np.nan, index=frame.index, dtype=float)
    for col in ("start_time", "end_time"):  # (the end where there is one)
        if col in frame.columns:
            stamp = pd.to_datetime(frame[col], errors="coerce", utc=True)
            when = (stamp - pd.Timestamp(0, tz="UTC")).dt.total_seconds().fillna(when)
    order = pd.DataFrame({"id": ids, "ended": status.isin(["finished", "diverged"]),
                          "when": when.fillna(-np.inf)}, index=frame.index)[twice]
    kept = order.sort_values(["ended", "when"], kind="stable").groupby("id").tail(1).index
    trials = int(ids[twice].nunique())
    print(f"note: {source}: {trials} trial{'s' * (trials != 1)} "
          f"{'have' if trials != 1 else 'has'} more than one run in the store (tag "
          f"{TRIAL_ID_TAG}, e.g. {ids[twice].iloc[0]}); each is counted once, by its latest "
          "ended run", file=sys.stderr)
    return frame[~twice | frame.index.isin(kept)]


def from_short_frame(frame: pd.DataFrame, *, source: str) -> Runs:
    """Normalise a frame with short column names (N, D, B, lr, wd, loss, status, run, C), or
    the keys they stand for (`optim.lr`, `train.tokens`, `derived.n_params`, ...: what the
    messages name, `MLFLOW_KEYS`) where the short column is absent."""
    frame = frame.rename(columns={k: v for k, v in ALIASES.items() if k in frame.columns})
    frame = frame.rename(columns={key: short for short, key in MLFLOW_KEYS.items()
                                  if key in frame.columns and short not in frame.columns})
    table = pd.DataFrame(index=frame.index)
    table["run"] = frame["run"].astype(str) if "run" in frame else frame.index.astype(str)
    table["status"] = frame["status"] if "status" in frame else None
    for name in ("lr", "loss", "N", "D", "B", "wd", "seq_len"):
        table[name] = _number(frame.get(name), frame.index)
    table["tau"] = _number(frame.get(PARAM_TIMESCALE), frame.index)
    if "seed" in frame:
        table["seed"] = _labels(frame["seed"])
    if "C" in frame and table["D"].isna().all():
        table["D"] = _number(frame["C"], frame.index) / (6.0 * table["N"])
    extra = [c for c in frame.columns if "." in str(c) and _slice_key(c)
             and frame[c].nunique(dropna=False) > 1]
    for key in extra:
        table[key] = _labels(frame[key])
    for key in KEPT_KEYS:
        if key in frame and key not in extra:
            table[key] = _labels(frame[key])
    return _finish(table, extra, source)


def read_csv(path: str | Path) -> Runs:
    """Read runs from a CSV in either spelling; a `step` column marks a loss-history file."""
    path = Path(path)
    if path.is_dir():
        raise FitError(f"--from-csv {path} is a folder; give the CSV file in it.")
    if not path.is_file():
        raise FitError(f"CSV file {path} does not exist; pass the path of an exported runs "
                       "table to --from-csv.")
    with path.open("rb") as head:
        utf16 = head.read(2) in (b"\xff\xfe", b"\xfe\xff")  # (a spreadsheet's "Unicode" export)
    encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        frame = _separated(pd.read_csv(path, encoding=encoding), path, encoding)
    except UnicodeDecodeError as err:
        raise FitError(f"CSV {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
                       f"offset {err.start}); save it as UTF-8 (\"CSV UTF-8\" in a "
                       "spreadsheet) and pass it again.") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise FitError(f"CSV {path} cannot be read as a table ({str(err).splitlines()[0]}); "
                       "export the runs again, e.g. with mlflow.search_runs(...).to_csv().") \
            from None
    frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    _check_case(frame, path)
    _check_values(frame, path)
    histories: dict[str, np.ndarray] = {}
    if "step" in frame.columns:
        frame, histories = _split_histories(frame, path)
    mlflow_style = _mlflow_style(frame)
    short = set(frame.columns) & (set(CANONICAL) | set(ALIASES))
    if not mlflow_style and "loss" not in short and FINAL_EVAL_LOSS not in frame.columns:
        raise FitError(f"CSV {path} lacks a loss column: it needs `metrics.final/eval_loss` "
                       "or `loss`, with `params.optim.lr`/`lr`, `N`, `D`, `B` as the laws "
                       f"need (it has {', '.join(map(str, frame.columns[:8]))}).")
    reader = from_mlflow_frame if mlflow_style else from_short_frame
    runs = reader(frame, source=str(path))
    _check_units(runs.table, path, named="run" in frame or "run_id" in frame)
    if not histories:  # (the table's rows are the file's, in order: `_finish` kept them)
        runs = _drop_repeated_runs(runs, frame, path)
    _warn_ignored(frame, path, mlflow_style)
    _note_diverged_with_a_loss(runs.table, path)
    if mlflow_style and runs.table["loss"].isna().all() and "metrics.final/eval_loss" not in frame:
        raise FitError(f"CSV {path} lacks column `metrics.final/eval_loss`; export it with "
                       "the runs or rename the loss column to `loss`.")
    return Runs(runs.table, runs.slice_keys, runs.source, histories)


def _separated(frame: pd.DataFrame, path: Path, encoding: str) -> pd.DataFrame:
    """The table of a file separated by semicolons or tabs (a spreadsheet's export in many
    locales), which reads with commas as one column: read again with its separator, and with
    decimal commas where a semicolon file writes its numbers so (`0,001`)."""
    if len(frame.columns) != 1:
        return frame
    header = str(frame.columns[0])
    sep = ";" if ";" in header else "\t" if "\t" in header else None
    if sep is None:
        return frame
    again = pd.read_csv(path, sep=sep, encoding=encoding, dtype=str)
    decimal_comma = sep == ";" and again.apply(
        lambda col: col.str.fullmatch(r"\s*[-+]?\d*,\d+([eE][-+]?\d+)?\s*").any()).any()
    return pd.read_csv(path, sep=sep, encoding=encoding,
                       **({"decimal": ","} if decimal_comma else {}))


KNOWN_COLUMNS = (*CANONICAL, "run", "status", "seed", "C", "step", "seq_len")
"""Short column names the fitter reads, as written (`Loss` is none of them)."""


def _check_case(frame: pd.DataFrame, path: Path) -> None:
    """A column that differs from one the fitter reads only in case (`Loss`, `LR`, `n`) would
    be ignored, and its law refused for want of it: said, with the name to write."""
    columns = set(map(str, frame.columns))
    for col in map(str, frame.columns):
        same = [k for k in KNOWN_COLUMNS if k.casefold() == col.casefold() and k != col]
        if same and same[0] not in columns:
            raise FitError(f"CSV {path}: column `{col}` is read as no column (names are "
                           f"case-sensitive); rename it `{same[0]}`.")


POSITIVE = ("lr", "loss", "N", "D", "B", "C", "seq_len", "Model Size", "Training FLOP",
            PARAM_TIMESCALE, PARAM_LR, PARAM_N_PARAMS, PARAM_TOKENS, PARAM_BATCH_TOKENS,
            FINAL_EVAL_LOSS, *(f"params.{k}" for k in (
                PARAM_LR, PARAM_N_PARAMS, PARAM_TOKENS, PARAM_BATCH_TOKENS, PARAM_BATCH_SIZE,
                PARAM_SEQ_LEN, PARAM_TIMESCALE)), f"metrics.{FINAL_EVAL_LOSS}")
"""CSV columns whose values must be numbers > 0 where given (an empty cell: not recorded)."""
LOSSES = ("loss", FINAL_EVAL_LOSS, f"metrics.{FINAL_EVAL_LOSS}")
NON_NEGATIVE = ("wd", PARAM_WEIGHT_DECAY, f"params.{PARAM_WEIGHT_DECAY}",
                f"params.{PARAM_EFFECTIVE_WEIGHT_DECAY}")


def _check_values(frame: pd.DataFrame, path: Path) -> None:
    """Every number the laws read from a CSV is a number, in its range: one text cell or a
    negative loss would otherwise turn into a diverged run, a slice of its own or a fit from
    logarithms of negative numbers. Rows are the file's lines (the header is line 1)."""
    for col in [c for c in frame.columns if c in POSITIVE or c in NON_NEGATIVE]:
        raw = frame[col]
        given = raw.notna() & (raw.astype(str).str.strip() != "")
        values = pd.to_numeric(raw.where(given), errors="coerce")
        low = 0.0 if col in NON_NEGATIVE else None
        ok = np.isfinite(values) & ((values >= 0) if low == 0.0 else (values > 0))
        if col in LOSSES:  # an infinite or NaN loss is a run that diverged (text is not)
            nan = raw.astype(str).str.strip().str.lower().isin({"nan", "inf", "+inf"})
            ok |= (np.isnan(values) & nan) | (values == np.inf)
        bad = given & ~ok
        if bad.any():
            rows = list(frame.index[bad])
            first = rows[0]
            more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
            value = raw.loc[first]
            value = repr(value) if isinstance(value, str) else f"{value:g}"
            need = "a number >= 0" if low == 0.0 else "a number > 0"
            text = pd.isna(values.loc[first])
            fix = "write it as a plain number (4e8, not 400M)" if text else "fix or drop the row"
            if col in LOSSES and text:
                fix = "write it as a plain number, or leave it empty for a run that diverged"
            raise FitError(f"CSV {path}, line {first + 2}{more}: {col}={value} is not "
                           f"{need}; {fix}.")
    # A text config key (model.param, a schedule's name) that a hand-written CSV gives for
    # some runs and not others (an empty cell, a short row) would be a group of its own,
    # `model.param=nan`. (A number one group lacks, a cosine run's decay_fraction, is fine.)
    for col in [c for c in frame.columns if "." in str(c) and not str(c).startswith(
            ("params.", "metrics.", "tags.")) and c not in POSITIVE and c not in NON_NEGATIVE
            and _slice_key(str(c))]:
        empty = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        text = pd.to_numeric(frame.loc[~empty, col], errors="coerce").isna().all()
        if empty.any() and not empty.all() and text:
            rows = list(frame.index[empty])
            more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
            raise FitError(f"CSV {path}, line {rows[0] + 2}{more}: {col} is empty where other "
                           f"runs give it; give every run its {col}, or drop the column.")
    # In an MLflow export `status` is MLflow's run status (a diverged trial is FINISHED
    # there); the trial's own is `tags.trial.status`.
    mlflow_style = _mlflow_style(frame)
    if "status" in frame.columns and not mlflow_style:
        _check_statuses(frame, path)
    status = next((c for c in (TRIAL_STATUS_TAG, f"tags.{TRIAL_STATUS_TAG}",
                               *(() if mlflow_style else ("status",))) if c in frame.columns),
                  None)
    loss = next((c for c in ("loss", f"metrics.{FINAL_EVAL_LOSS}") if c in frame.columns), None)
    if status and loss and "step" not in frame.columns:
        # (an infinite loss of a `finished` run was counted finished, then dropped without a
        # word: its slice lost the instability a `diverged` mark would have shown)
        values = pd.to_numeric(frame[loss], errors="coerce")
        lost = (frame[status] == "finished") & ~np.isfinite(values)
        if lost.any():
            first = frame.index[lost][0]
            has = (f"its {loss} is {values.loc[first]:g}" if np.isinf(values.loc[first])
                   else f"has no {loss}")
            raise FitError(f"CSV {path}, line {first + 2}: the run is `finished` but {has}; "
                           "give its final loss, or mark it `diverged` or `failed`.")


STATUSES = ("finished", "diverged", "failed", "interrupted", "pruned", "running")
"""A run's status, as `tags.trial.status` spells it; a CSV may also use MLflow's run
statuses in any case (FINISHED, FAILED, KILLED, RUNNING, SCHEDULED)."""
_MLFLOW_STATUSES = {"killed": "interrupted", "scheduled": "running"}


def _check_statuses(frame: pd.DataFrame, path: Path) -> None:
    """A `status` column holds known statuses: a typo (`ok`, `done`) or an empty cell would
    otherwise drop a run from the fit without a word, as one that has not ended."""
    raw = frame["status"]
    spelt = raw.astype(str).str.strip().str.lower()
    bad = raw.isna() | ~spelt.isin(set(STATUSES) | set(_MLFLOW_STATUSES))
    if bad.any():
        rows = list(frame.index[bad])
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        value = raw.loc[rows[0]]
        shown = "empty" if pd.isna(value) or not str(value).strip() else f"{value!r}"
        raise FitError(f"CSV {path}, line {rows[0] + 2}{more}: status is {shown}; write one "
                       f"of {', '.join(STATUSES)} (a run the fit should use is finished or "
                       "diverged), or drop the status column.")
    frame["status"] = spelt.map(lambda v: _MLFLOW_STATUSES.get(v, v))


def _mlflow_style(frame: pd.DataFrame) -> bool:
    return any(str(c).startswith(("params.", "metrics.")) for c in frame.columns)


IDENTIFYING = ("run", "run_id", "seed", f"tags.{TRIAL_ID_TAG}", "params.seed")
"""Columns that tell two runs of one setting apart: where a file has one, a row repeated
exactly is one run given twice (a file concatenated with itself, an export appended twice)."""


def _drop_repeated_runs(runs: Runs, frame: pd.DataFrame, path: Path) -> Runs:
    """One run given twice, counted as two replicates that agree to the last digit, would
    shrink its optimum's interval: kept once, and said. Without a column that names runs, two
    equal rows may be two seeds (two that diverged, two rounded alike): kept, and said."""
    import sys

    kind = f"tags.{KIND_TAG}"
    if kind in frame.columns and (frame[kind] == KIND_TRIAL).any():
        frame = frame[frame[kind] == KIND_TRIAL]  # (the rows `from_mlflow_frame` keeps)
    repeated = frame.duplicated().to_numpy()
    if not repeated.any() or len(repeated) != len(runs.table):
        return runs
    count = int(repeated.sum())
    rows = f"{count} row{'s' * (count != 1)} repeat{'s' * (count == 1)} an earlier row " \
           f"exactly (the first at line {int(frame.index[repeated][0]) + 2})"
    if not any(c in frame.columns for c in IDENTIFYING):
        print(f"note: CSV {path}: {rows}; with no run or seed column they count as replicates "
              "(add one to tell runs apart)", file=sys.stderr)
        return runs
    print(f"note: CSV {path}: {rows}; each run is counted once", file=sys.stderr)
    return Runs(runs.table[~repeated].reset_index(drop=True), runs.slice_keys, runs.source,
                runs.histories)


def _check_units(table: pd.DataFrame, path: Path, named: bool) -> None:
    """D and B are both in tokens: a run shorter than one batch is a unit mistake (D given in
    millions or billions of tokens, B in sequences)."""
    short = table["D"] < table["B"]
    if short.any():
        row = table[short].iloc[0]
        where = f"run {row['run']}" if named else f"line {table.index[short][0] + 2}"
        raise FitError(f"CSV {path}: {where} has D={row['D']:g} training tokens, "
                       f"less than one batch of B={row['B']:g} tokens; give D and B in tokens "
                       "(not millions of tokens, not sequences).")


def _note_diverged_with_a_loss(table: pd.DataFrame, path: Path) -> None:
    """A row marked diverged with a finite loss is read as diverged (its loss left out): said,
    since it is most often an export's mistake (a loss below every finished run's was
    taken as a divergence without a word)."""
    import sys

    odd = table[(table["status"] == "diverged") & np.isfinite(table["loss"].astype(float))]
    if len(odd):
        one = len(odd) == 1
        print(f"note: CSV {path}: {len(odd)} row{'' if one else 's'} marked diverged "
              f"{'has' if one else 'have'} a loss (the first at line {odd.index[0] + 2}): "
              f"read as diverged, {'its' if one else 'their'} loss left out; check the export",
              file=sys.stderr)


def _warn_ignored(frame: pd.DataFrame, path: Path, mlflow_style: bool) -> None:
    """A column that varies but the fitter cannot read as a config key (`param` for
    `model.param`) is ignored: said, as it may be what tells two groups apart."""
    import sys

    known = set(CANONICAL) | set(ALIASES) | {"run", "status", "C", "seq_len", "step",
                                              "final_loss", "run_id", FINAL_EVAL_LOSS,
                                              "seed"}  # (seeds are replicates of a point)
    ignored = [c for c in frame.columns
               if not mlflow_style and c not in known and "." not in str(c)
               and not str(c).startswith("Unnamed") and frame[c].nunique(dropna=True) > 1]
    if ignored:
        print(f"note: CSV {path}: column{'s' * (len(ignored) > 1)} "
              f"{', '.join(map(str, ignored))} {'vary' if len(ignored) > 1 else 'varies'} but "
              f"no law reads {'them' if len(ignored) > 1 else 'it'}; name a column by its "
              "dotted config key (e.g. model.param) to fit a law per value, or drop it",
              file=sys.stderr)


def require(runs: Runs, columns: tuple[str, ...], *, law: str) -> pd.DataFrame:
    """The usable runs, after checking that each has every column a law needs.

    Raises:
        FitError: a column is missing altogether, or some runs lack it.
    """
    usable = runs.usable
    if len(usable) and (usable.status == "diverged").all():
        low = float(usable["lr"].min())
        how = "lower `optim.lr` (e.g. by 10×) and extend the sweep"
        if runs.source.startswith("sweep ") and np.isfinite(low):  # (the line to type)
            import shlex

            name = shlex.quote(runs.source.removeprefix("sweep "))
            how += (f": sweep extend {name} 'optim.lr=choice({low / 30:.2g}, {low / 10:.2g}, "
                    f"{low / 3:.2g})'")
        raise FitError(f"every one of the {len(usable)} runs in {runs.source} diverged; "
                       f"{how}.")
    if usable.empty:
        statuses = set(runs.table["status"])
        if statuses and statuses <= {"failed", "interrupted", "pruned"}:
            raise FitError(f"{runs.source} has no finished or diverged runs to fit: its "
                           f"{len(runs.table)} runs are {', '.join(sorted(statuses))}; "
                           + ("`sweep status` shows their errors, " if "failed" in statuses
                              else "")
                           + "`sweep resume` runs them again.")
        if Path(runs.source).is_file():  # a CSV
            held = (f"its {len(runs.table)} row{'s' * (len(runs.table) != 1)} "
                    f"{'are' if len(runs.table) != 1 else 'is'} {', '.join(sorted(statuses))}"
                    if len(runs.table) else "it has a header and no rows")
            raise FitError(f"{runs.source} has no finished or diverged runs to fit ({held}); "
                           "the fit reads rows whose status is finished (with a loss) or "
                           "diverged.")
        raise FitError(f"{runs.source} has no finished or diverged runs to fit; wait for the "
                       "sweep to finish (`sweep status`).")
    for col in columns:
        values = runs.table[col] if col in runs.table else pd.Series(dtype=float)
        if values.isna().all():
            raise FitError(f"the {law} law needs `{MLFLOW_KEYS.get(col, col)}` ({col}) but no "
                           f"run in {runs.source} has it; record it (or add column {col} to "
                           "the CSV).")
        lacking = usable[col].isna() if col != "loss" else usable.loss.isna() & (
            usable.status == "finished")
        if lacking.any():
            raise FitError(f"{int(lacking.sum())} of {len(usable)} runs in {runs.source} lack "
                           f"`{MLFLOW_KEYS.get(col, col)}` ({col}), which the {law} law needs; "
                           "re-sync those runs or drop them.")
    return usable


def _finish(table: pd.DataFrame, extra: list[str], source: str) -> Runs:
    if table["status"].isna().all():
        table["status"] = np.where(np.isfinite(table["loss"]), "finished", "diverged")
    table["status"] = table["status"].fillna("running").astype(str)
    keys = [a for a in AXES if table[a].nunique() > 1] + extra
    if _given_wd(table).nunique() > 1:
        keys.insert(len([k for k in keys if k in AXES]), "wd")
    return Runs(table.reset_index(drop=True), tuple(keys), source)


def slice_column(table: pd.DataFrame, key: str) -> pd.Series:
    """The values of a slice key to group runs by (λ only where the run was given it)."""
    return _given_wd(table) if key == "wd" and "tau" in table else table[key]


def slice_values(row: pd.Series, keys: tuple[str, ...]) -> dict:
    """A slice's key values (a row of the optima) to select its runs by (`slice_column`)."""
    given_tau = pd.notna(row.get("tau"))
    return {k: row[k] for k in keys if k in row and not (k == "wd" and given_tau)}


def _given_wd(table: pd.DataFrame) -> pd.Series:
    """λ as a slice key: the λ of each run that was given one, NaN for a run given τ.

    A run given τ derives λ = B/(η·τ·D) from its LR, so its λ differs between the LRs of one
    slice and its τ (`optim.timescale`) names the slice instead; a sweep may mix both kinds,
    e.g. `optim.timescale: choice(0.3, 0.9, null)` with a no-weight-decay control."""
    return table["wd"].where(table["tau"].isna())


def _split_histories(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict]:
    run_col = "run" if "run" in frame else "run_id" if "run_id" in frame else None
    loss_col = "loss" if "loss" in frame else "metrics.eval/loss" if (
        "metrics.eval/loss" in frame) else None
    if run_col is None or loss_col is None:
        raise FitError(f"CSV {path} has a `step` column but lacks `run` or `loss`; a history "
                       "file needs one row per (run, step, loss).")
    frame = frame.sort_values([run_col, "step"])
    histories = {str(run): g[["step", loss_col]].to_numpy(float)
                 for run, g in frame.groupby(run_col)}
    last = frame.groupby(run_col, as_index=False).tail(1).copy()
    final = "final_loss" if "final_loss" in last else None
    if final:
        last[loss_col] = last[final]
    if loss_col != "loss" and "metrics.final/eval_loss" not in last:
        last["metrics.final/eval_loss"] = last[loss_col]
    last[run_col] = last[run_col].astype(str)
    return last.drop(columns=["step"]).reset_index(drop=True), histories


def _slice_key(key: str) -> bool:
    return key not in _NOT_SLICE_KEYS and not key.startswith(_NOT_SLICE_PREFIXES) and not any(
        word in key for word in ("dir", "path", "cache", "every"))


def _labels(values: pd.Series) -> pd.Series:
    """A slice key's values as text, spelt as the config spells them: pandas reads a whole-
    number column with a gap (a key one group lacks) as float, and 128.0 is model.width=128;
    so is a whole-number key a CSV wrote as 32.0 (model.base_width=32.0 named a group)."""
    from trainer.identity import whole_number_key

    whole = values.dropna()
    as_int = (pd.api.types.is_float_dtype(values) and bool((whole == whole.round()).all())
              and (values.isna().any() or whole_number_key(str(values.name))))
    # (mapped, not astype(str): pandas 3 keeps a missing value missing there)
    return values.map(lambda v: "nan" if pd.isna(v) else str(int(v)) if as_int else str(v))


def _number(values, index: pd.Index) -> pd.Series:
    if values is None:
        return pd.Series(np.nan, index=index, dtype=float)
    return pd.to_numeric(values, errors="coerce").astype(float)


def _first(frame: pd.DataFrame, columns: list[str], *, default) -> pd.Series:
    for col in columns:
        if col in frame:
            return frame[col]
    return pd.Series(default, index=frame.index)
