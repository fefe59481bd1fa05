"""Run tracking sinks: every round record also goes to TensorBoard and/or MLflow (a local store), for
the simulator (``hamrah run``, sweeps, reproductions, the lab) and the server alike.

Switched on by a ``[tracking]`` section::

    [tracking]
    tensorboard = true          # event files in <out>/tensorboard (or tensorboard_dir)
    mlflow = true               # a local MLflow store in <out>/mlruns (or mlflow_uri, e.g. http://host:5000)
    experiment = "hamrah"       # MLflow experiment name

Both libraries are the optional extra ``pip install 'hamrah[tracking]'``; a sink asked for without it
stops with a :class:`ConfigError` naming the extra, before the run starts. So does a sink that cannot
start: a TensorBoard folder that cannot be written, an ``mlflow_uri`` whose scheme the installed MLflow
has no store for (mlflow-skinny has no SQL store: ``sqlite:`` needs the full ``mlflow``), a tracking
server that does not answer (probed once, without retries and with a 5 s timeout); what the sinks had
created is removed. A sink that fails later (the server goes away, the folder becomes unwritable) is
warned about once, named with the cause, and fed no more; the run and its own records carry on, and
:attr:`Tracking.failures` names it. Numeric fields of each record become scalars/metrics at step =
round; the resolved config becomes TensorBoard text and MLflow parameters. MLflow is driven through an
``MlflowClient`` (no global active run); its file store is in maintenance mode in MLflow 3, so for a
``file:`` store this module sets ``MLFLOW_ALLOW_FILE_STORE`` unless the environment already sets it.
MLflow's HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_TIMEOUT``, 7 and 120 s, about 4 minutes
before a call to a dead server gives up) are bounded around this module's calls (0 and 5 s for the
probe, 2 and 10 s after it) unless the environment sets them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import is_number
from hamrah.observe.runs import read_records

EXTRA = "pip install 'hamrah[tracking]'  (tensorboard, mlflow-skinny)"
PROBE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}  # start-up: fail fast
LATER = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}  # a round: a blip is retried
_ENV_LOCK = threading.Lock()  # sinks of concurrent runs (the lab, the server's feed) set the same variables
log = logging.getLogger("hamrah.tracking")


@dataclass(frozen=True)
class TrackingConfig:
    """The ``[tracking]`` section: which sinks get the round records.

    Attributes:
        tensorboard: write TensorBoard event files.
        mlflow: log to an MLflow tracking store.
        tensorboard_dir: where (default ``<out>/tensorboard``).
        mlflow_uri: the store (default ``<out>/mlruns`` as a local file store).
        experiment: the MLflow experiment name.
        run_name: the run's name in both (default: the output folder's name).
    """

    tensorboard: bool = False
    mlflow: bool = False
    tensorboard_dir: str | None = None
    mlflow_uri: str | None = None
    experiment: str = "hamrah"
    run_name: str | None = None


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k != "round" and is_number(v)}


def _cause(err: BaseException) -> str:
    """One line for a sink's error: the OS error where there is one (``[Errno 111] Connection refused``)."""
    text = " ".join(str(err).split())
    found = re.search(r"\[Errno -?\d+\] [^'\"()\[\]]+", text)
    return found.group(0).strip() if found else f"{type(err).__name__}: {text[:300]}"


@contextmanager
def _http_limits(limits: dict[str, str]) -> Iterator[None]:
    """MLflow's HTTP retry settings bounded for the calls inside, unless the environment sets them."""
    with _ENV_LOCK:
        added = [k for k in limits if k not in os.environ]
        os.environ.update({k: limits[k] for k in added})
        try:
            yield
        finally:
            for k in added:
                os.environ.pop(k, None)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what a sink's start-up would create)."""
    path = path.resolve()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)[:500]
    return out


class TensorBoardSink:
    """Round records as TensorBoard scalars (``torch.utils.tensorboard.SummaryWriter``)."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, config: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"[tracking] tensorboard = true needs the tensorboard package: {EXTRA}") from None
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir))
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)
            self.writer.flush()
        except OSError as e:
            raise ConfigError(
                f"[tracking] tensorboard_dir {str(log_dir)!r} cannot be written ({_cause(e)}); "
                "expected a folder this process can create and write"
            ) from None

    def log_round(self, record: dict) -> None:
        step = int(record.get("round", 0))
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()


class MLflowSink:
    """Round records as MLflow metrics (step = round), the config as parameters.

    Raises:
        ConfigError: the package is missing, the URI's scheme has no store in the installed MLflow, or
            the store does not answer the start-up probe (names the URI and the cause).
    """

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, run_name: str, config: dict):
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(f"[tracking] mlflow = true needs the mlflow package: {EXTRA}") from None
        self._metric = Metric
        try:
            with _http_limits(PROBE):
                self.client = MlflowClient(uri)
                found = self.client.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
                params = [Param(k, v) for k, v in sorted(_flat(config).items())]
                for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                    self.client.log_batch(self.run_id, params=params[i : i + 100])
        except Exception as e:
            raise ConfigError(_start_error(uri, e)) from None

    def log_round(self, record: dict) -> None:
        step, now = int(record.get("round", 0)), int(time.time() * 1000)
        metrics = [self._metric(k, v, now, step) for k, v in _scalars(record).items()]
        with _http_limits(LATER):
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def close(self, status: str = "FINISHED") -> None:
        with _http_limits(LATER):
            self.client.set_terminated(self.run_id, status)


def _start_error(uri: str, err: Exception) -> str:
    schemes = getattr(err, "supported_uri_schemes", None)  # mlflow's UnsupportedModelRegistryStoreURIException
    if schemes is not None:
        return (
            f"[tracking] mlflow_uri {uri!r}: the installed MLflow has no store for {urlparse(uri).scheme!r} URIs "
            f"(it takes a folder path or {', '.join(f'{s}:' for s in schemes if s)}); a SQL store needs the "
            "full package (pip install mlflow), or use a folder, a file: URI or an http(s):// tracking server"
        )
    return (
        f"[tracking] mlflow_uri {uri!r}: the MLflow store did not answer at start-up ({_cause(err)}); "
        "expected a running tracking server or a writable store"
    )


class Tracking:
    """The sinks a ``[tracking]`` section asks for, opened for one run in ``out``.

    Args:
        cfg: the section (None or nothing switched on: no sinks, every call is a no-op).
        out: the run's output folder (default places for both sinks).
        config: the resolved run config (logged once).

    Attributes:
        sinks: the sinks still fed.
        failures: sink name -> the cause, for each sink that failed after the start and was dropped.

    Raises:
        ConfigError: a sink's package is not installed (names the extra), or a sink cannot start (names
            the folder or URI and the cause); what the sinks had created is removed.
    """

    def __init__(self, cfg: TrackingConfig | None, out: Path, config: dict):
        self.sinks: list = []
        self.failures: dict[str, str] = {}
        if cfg is None or not (cfg.tensorboard or cfg.mlflow):
            return
        name = cfg.run_name or Path(out).resolve().name
        tb_dir = Path(cfg.tensorboard_dir or Path(out) / "tensorboard")
        made = {p for p in (_first_missing(Path(out)), _first_missing(tb_dir) if cfg.tensorboard else None) if p}
        try:
            if cfg.tensorboard:
                self.sinks.append(TensorBoardSink(tb_dir, config))
            if cfg.mlflow:
                uri = cfg.mlflow_uri or (Path(out) / "mlruns").resolve().as_uri()
                self.sinks.append(MLflowSink(uri, cfg.experiment, name, config))
        except BaseException:
            for sink in self.sinks:
                self._call(sink, sink.close, "FAILED")
            for path in made:  # nothing half-written: the folders only these sinks created
                shutil.rmtree(path, ignore_errors=True)
            raise

    def _call(self, sink, method, *args) -> None:
        """Call a sink; a sink that fails is warned about once and fed no more (the run carries on)."""
        try:
            method(*args)
        except Exception as e:
            if sink in self.sinks:
                self.sinks.remove(sink)
                self.failures[sink.name] = _cause(e)
                log.warning("[tracking] %s stopped: %s; the run carries on without it", sink.name, _cause(e))

    def log_round(self, record: dict) -> None:
        for sink in list(self.sinks):
            self._call(sink, sink.log_round, record)

    def close(self, status: str = "FINISHED") -> None:
        for sink in list(self.sinks):
            self._call(sink, sink.close, status)


class RecordFeed:
    """Follow a ``metrics.jsonl`` that another writer rewrites (the server's store) in a thread and
    hand each new record to ``on_record``: the server's event loop does no tracking I/O.

    Args:
        path: the ``metrics.jsonl`` to follow.
        on_record: called with each new record, in round order, from the feed's thread.
        poll_s: how often the file's size and time are checked.
    """

    def __init__(self, path: Path, on_record, poll_s: float = 0.5):
        self.path, self.on_record, self.poll_s = Path(path), on_record, poll_s
        self.seen = {r.get("round") for r in read_records(self.path)}  # rounds of earlier processes
        self._stop = threading.Event()
        self._stamp = None
        self._thread = threading.Thread(target=self._loop, name="hamrah-record-feed", daemon=True)

    def start(self) -> RecordFeed:
        self._thread.start()
        return self

    def poll(self) -> int:
        """Hand on the records not seen yet; return how many."""
        try:
            st = self.path.stat()
        except OSError:
            return 0
        if (st.st_mtime_ns, st.st_size) == self._stamp:
            return 0
        self._stamp = (st.st_mtime_ns, st.st_size)
        new = [r for r in read_records(self.path) if r.get("round") not in self.seen]
        for rec in new:
            self.seen.add(rec.get("round"))
            self.on_record(rec)
        return len(new)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        """Stop following, after a last look at the file."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.poll()


__all__ = ["EXTRA", "MLflowSink", "RecordFeed", "TensorBoardSink", "Tracking", "TrackingConfig"]
