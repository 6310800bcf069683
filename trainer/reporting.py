"""Where a run's metrics go: stdout and a JSONL file by default, MLflow when asked.

A reporter sees the run start (possibly resumed from a checkpoint step), metrics per optimizer
step, and the end with its status and summary. On resume, the JSONL history is cut back to the
checkpoint's step so that the file reads exactly like an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Protocol

from trainer import schema


class Reporter(Protocol):
    """What the training loop reports to."""

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        """A run begins; `resumed_step` is the checkpoint step it resumes from, if any."""

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        """Metrics at an optimizer step."""

    def finish(self, *, status: str, summary: dict) -> None:
        """The run ended with `status` (finished, diverged, failed, interrupted)."""


_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@")


def redact(text: str) -> str:
    """`scheme://user:password@host` → `scheme://user:***@host`, anywhere in `text`: a
    password in a tracking URI never reaches a log, a param or a file."""
    return _USERINFO.sub(r"\g<head>:***@", text)


STORE_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql",
                 "databricks", "databricks-uc", "uc")
"""The tracking URI schemes MLflow stores runs to (SQLAlchemy dialects with a driver, as in
postgresql+psycopg, by their first part)."""


def _plugin_schemes() -> set[str]:
    """URI schemes of tracking stores that installed packages register with MLflow."""
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="mlflow.tracking_store")}


def store_uri_problem(uri: str, *, named: str, flag: str) -> str | None:
    """What is wrong with the form of a tracking URI, said before MLflow is asked (its answers:
    a traceback, or 100 s of retries for a folder), else None. `named`: how the sentence names
    the URI (`tracking URI X`); `flag`: where the user sets it."""
    if bare := re.fullmatch(r"([\w.-]+):(\d{1,5})(/.*)?", uri):  # localhost:5000
        return (f"{named} has no scheme: a server is http://{bare[1]}:{bare[2]}{bare[3] or ''} "
                f"(https:// behind TLS); fix {flag}")
    given = re.match(r"([A-Za-z][\w+.-]*):", uri)  # (sqlite:/path, one slash or none)
    scheme = uri.partition("://")[0].split("+")[0].lower() if "://" in uri else (
        uri.lower() if uri.lower() in (*STORE_SCHEMES, *_plugin_schemes()) else
        given[1].split("+")[0].lower() if given and given[1].split("+")[0].lower()
        in STORE_SCHEMES else "")
    # (a bare scheme is MLflow's own form for some stores: `databricks`, `uc`)
    if scheme and scheme not in STORE_SCHEMES and scheme not in _plugin_schemes():
        return (f"{named}: MLflow has no store for '{scheme}://' URIs; give sqlite:///PATH.db, "
                f"http(s)://HOST:PORT or postgresql://... to {flag}")
    if scheme in ("", "file"):  # MLflow 3's file store, in maintenance: its runs are not ours
        path = uri.split(":", 1)[1] if scheme else uri  # (file:/p, file:///p, file://p)
        path = "/" + path.lstrip("/") if path.startswith("//") else path
        folder = Path(path).expanduser().resolve()
        return (f"{named} is a path (MLflow's file store, which proxysweep does not use): give "
                "an SQLite store, e.g. "
                f"sqlite:///{folder if folder.suffix == '.db' else folder / 'mlflow.db'}, or a "
                f"server, to {flag}")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        return (f"{named}: an SQLite store is sqlite:///PATH.db (three slashes, then the file's "
                f"path: sqlite:////abs/path.db for an absolute one); fix {flag}")
    if scheme == "sqlite" and "?" in uri:
        # (MLflow took `?mode=ro&uri=true` into a new file's name, and SQLAlchemy ignored
        # `?mode=ro` and opened the store to write; our checks read it as a missing file)
        return (f"{named}: an SQLite store's URI takes no query ('?{uri.partition('?')[2]}'); "
                f"give the file alone, {uri.partition('?')[0]}, to {flag}")
    if scheme == "sqlite" and Path(path := uri.removeprefix("sqlite:///")).is_dir():
        return (f"{named} is a folder: an SQLite store is a file; give one in it, e.g. "
                f"sqlite:///{Path(path).resolve() / 'mlflow.db'}, to {flag}")
    return None


SERVER_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
"""Default ports of the tracking URIs that name a server (SQLAlchemy dialects: `postgresql+psycopg`
counts as `postgresql`)."""
CONNECT_TIMEOUT_S = 5.0


def unreachable_server(uri: str, timeout_s: float = CONNECT_TIMEOUT_S, *,
                       answer: bool = True) -> str | None:
    """Why the server a tracking URI names cannot be reached (one TCP connect, at most
    `timeout_s`; for http(s), with `answer`, one request too: `_http_problem`), or None when
    it answers or the URI names no server (a file store). Checked before a command starts:
    MLflow's client retries a refused connection for minutes before it says anything."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if scheme not in SERVER_PORTS:
        return None
    try:
        host, port = parts.hostname, parts.port or SERVER_PORTS[scheme]
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if not host:
        return None  # a socket path or the driver's default host: the client decides
    import urllib.request

    if scheme.startswith("http") and urllib.request.getproxies().get(scheme) and \
            not urllib.request.proxy_bypass(host):
        return None  # reached through a proxy: only a request through it can tell
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            if scheme == "https" and (problem := _tls_problem(conn, host, timeout_s)):
                return problem
    except socket.gaierror:
        return f"no host named {host}"
    except ConnectionRefusedError:
        return f"nothing listens on {host}:{port} (connection refused)"
    except TimeoutError:
        return f"{host}:{port} did not answer within {timeout_s:g} s"
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    return _http_problem(parts, host, port) if answer and scheme.startswith("http") else None


ANSWER_TIMEOUT_S = 15.0
"""How long a tracking server that took the connection may take to answer one request."""


def _http_problem(parts, host: str, port: int) -> str | None:
    """A server that takes connections but does not answer (a hung process, a port that is
    no HTTP server) held every command for 20 minutes of MLflow's read timeouts and retries;
    one that answers 404 for MLflow's REST API under the URI's path (a path that is a web
    page's, not the server's root) gave MLflow's raw message with an HTML body. Any other
    answer (200, or 401 of a server with auth) is the client's to judge."""
    import http.client
    import ssl

    timeout_s = ANSWER_TIMEOUT_S
    if parts.scheme.lower().startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    base = parts.path.rstrip("/")
    try:
        conn.request("GET", f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
        status = conn.getresponse().status
    except TimeoutError:
        return (f"{host}:{port} takes connections but did not answer a request within "
                f"{timeout_s:g} s (a server that hangs, or no HTTP server there)")
    except ssl.SSLError:  # (one that wants a client certificate: the client has it, not this)
        return None
    except (OSError, http.client.HTTPException) as err:
        return f"{host}:{port} took the connection but no HTTP answer came ({err})"
    finally:
        conn.close()
    if status == 404:
        return (f"it answers, but not as an MLflow tracking server at "
                f"{base or '/'} (404 for its REST API): give the server's own address"
                + (f", without {base}," if base else ""))
    return None


def _tls_problem(conn, host: str, timeout_s: float) -> str | None:
    """An https:// URI whose server speaks plain http: MLflow's client retried the failed
    handshake for over 4 minutes before it said so. Only that is said here: a certificate the
    client would refuse is MLflow's to judge (`MLFLOW_TRACKING_INSECURE_TLS`, a CA bundle)."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn.settimeout(timeout_s)
    try:
        with context.wrap_socket(conn, server_hostname=host):
            return None
    except ssl.SSLError as err:
        if "WRONG_VERSION_NUMBER" in str(err) or "record layer failure" in str(err):
            return "it answers plain http, not https: give http:// instead"
        return None
    except OSError:
        return None


class JsonlReporter:
    """One JSON object per metrics call in `path`; a short line on stdout every call."""

    def __init__(self, path: Path, *, echo: bool = True):
        self.path, self.echo = path, echo

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resumed_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if (row := metrics_row(line)) is not None and row["step"] <= resumed_step]
        # Replaced whole, never rewritten in place: a branch may be reading a trunk's file.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)
        if self.echo:
            where = f"resuming at step {resumed_step}" if resumed_step else "starting"
            print(f"run {run_id[:12]} {where}; metrics: {self.path}", flush=True)

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.echo:
            print(_format_line(step, metrics), flush=True)

    def finish(self, *, status: str, summary: dict) -> None:
        if self.echo:
            loss = summary.get("final/eval_loss")
            text = f"{loss:.4f}" if isinstance(loss, float) else "n/a"
            print(f"run {status}: final eval loss {text} after "
                  f"{summary.get('final/tokens', 0):,} tokens", flush=True)


def metrics_row(line: str) -> dict | None:
    """A metrics.jsonl line as its dict; None for a blank line or one a kill cut short."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


def _format_line(step: int, metrics: dict[str, float]) -> str:
    short = {"train/loss": "loss", "eval/loss": "eval", "train/lr": "lr",
             "train/grad_norm": "gnorm", "perf/tokens_per_s": "tok/s", "perf/mfu": "mfu"}
    parts = [f"step {step:>6}"]
    for key, name in short.items():
        if key in metrics and metrics[key] is not None and math.isfinite(metrics[key]):
            value = metrics[key]
            parts.append(f"{name} {value:.3g}" if key != "perf/tokens_per_s"
                         else f"{name} {value:,.0f}")
    if metrics.get("train/norm_test") is not None:  # a norm-test step (adaptive batch)
        parts.append(f"norm-test {metrics['train/norm_test']:.3g}  "
                     f"batch tokens {metrics['train/batch_tokens']:,}")
    return "  ".join(parts)


class MultiReporter:
    """Fan every call out to several reporters."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def start(self, **kwargs) -> None:
        for r in self.reporters:
            r.start(**kwargs)

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        for r in self.reporters:
            r.log_metrics(metrics, step=step)

    def finish(self, **kwargs) -> None:
        for r in self.reporters:
            r.finish(**kwargs)


class MlflowReporter:
    """A standalone run's MLflow record: one run per config id, continued on resume.

    Metrics are buffered and written with `log_batch` (at most 1000 per call) every
    `flush_every_s` seconds and at the end, so a fast loop does not wait on the store.

    A resumed run's record is completed from `history` (the run's `metrics.jsonl`, which holds
    every logged step up to the checkpoint it resumes from): the steps a killed process had
    buffered and not yet sent are added, and the steps the record already has (sent before
    the kill, past that checkpoint, and trained again) are not sent twice.
    """

    def __init__(self, uri: str, experiment: str, *, flush_every_s: float = 5.0,
                 history: Path | None = None):
        import mlflow

        self.client, self.uri = mlflow.MlflowClient(tracking_uri=uri), uri
        self.experiment, self.flush_every_s = experiment, flush_every_s
        self.history = history
        self.run_id: str | None = None
        self.buffer: list = []
        self.recorded: dict[str, set[int]] = {}
        """Per metric, the steps the record had when this process resumed it."""
        self.last_flush = time.monotonic()

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        from mlflow.entities import Param, RunTag

        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else schema.create_experiment(
            self.client, self.uri, self.experiment)
        run = schema.find_or_create_run(self.client, exp_id, name=run_id[:12], tags={
            schema.TRIAL_ID_TAG: run_id, schema.KIND_TAG: schema.KIND_TRIAL})
        self.run_id = run.info.run_id
        if not run.data.params:  # a new run (a resumed one has them)
            schema.log_batch(self.client, self.run_id,
                             params=[Param(k, str(v)) for k, v in params.items()])
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.log_batch(self.run_id, tags=[RunTag(schema.TRIAL_STATUS_TAG,
                                                        schema.RUNNING)])
        if resumed_step is not None:  # (a record new to this store gets the whole history)
            self._complete_from_history(run.data.metrics)

    def _complete_from_history(self, keys) -> None:
        """Note what the resumed record has, and send what `history` has and it lacks."""
        self.recorded = {key: {m.step for m in self.client.get_metric_history(self.run_id, key)}
                         for key in keys}
        if self.history is None or not self.history.exists():
            return
        for line in self.history.read_text().splitlines():
            if (row := metrics_row(line)) is not None:
                step = row.pop("step")
                self.log_metrics({k: v for k, v in row.items()
                                  if isinstance(v, (int, float))}, step=step)
        self.flush()

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()
                        if v is not None and math.isfinite(v)
                        and step not in self.recorded.get(k, ())]
        if time.monotonic() - self.last_flush > self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        schema.log_batch(self.client, self.run_id, metrics=self.buffer)
        self.buffer, self.last_flush = [], time.monotonic()

    def finish(self, *, status: str, summary: dict) -> None:
        from mlflow.entities import RunTag

        step = int(summary.get(schema.FINAL_STEPS, 0))
        self.log_metrics({k: v for k, v in summary.items() if k.startswith(schema.FINAL_PREFIX)
                          and isinstance(v, (int, float))}, step=step)
        self.flush()
        self.client.log_batch(self.run_id, tags=[RunTag(schema.TRIAL_STATUS_TAG, status)])
        self.client.set_terminated(self.run_id, status=schema.run_status(status))


class NullReporter:
    """What ranks other than 0 report to: nothing (rank 0 reports global values)."""

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        pass

    def finish(self, *, status: str, summary: dict) -> None:
        pass
