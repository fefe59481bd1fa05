"""Run one party of a vertical protocol as its own process: data, channel, checkpoints, resumption.

The driver half of ``hamrah.vertical``: the role function is the same one ``run_parties`` runs in
threads; here it talks over :class:`~hamrah.parties.channel.GrpcChannel`. After every completed epoch
the party writes a checkpoint (``out/checkpoints/epoch-0003.npz``, written to a temporary file and
renamed, so a crash leaves no half-written file). When a peer goes away (:class:`PartyFailed`) the
party says so, keeps its server up, and starts the protocol again; the parties agree on the last
epoch all of them completed (``lr_start.hello``) and go on from there.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hamrah.core.errors import ConfigError, DataError, PartyFailed
from hamrah.core.files import check_writable_folder, write_atomic
from hamrah.data.vertical import read_party_csv
from hamrah.parties.channel import PartyServer
from hamrah.parties.config import PartyConfig
from hamrah.vertical import psi
from hamrah.vertical.lr_common import LRState
from hamrah.vertical.predict import predictor, score
from hamrah.vertical.registry import resolve
from hamrah.vertical.saved import model_arrays, model_file, save_arrays, settings_json


def data_digest(table) -> str:
    """A SHA-256 of this party's table as read (column names, ids, values, labels); "" without data."""
    if table is None:
        return ""
    h = hashlib.sha256(json.dumps(list(table.feature_names)).encode())
    for a in (table.ids, table.features, table.labels):
        a = np.zeros(0) if a is None else np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def _save(folder: Path, state, settings: str = "", data: str = "") -> None:
    """Write ``state`` (an epoch's checkpoint) as ``folder/epoch-NNNN.npz``, never half-written, with
    the protocol's ``settings`` (JSON) it was trained under and the ``data`` digest of its table."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {**model_arrays(state), "settings": np.array(settings), "data": np.array(data)}
    save_arrays(folder / f"epoch-{state.epoch:04d}.npz", arrays)


def load_checkpoints(folder: Path, kind: type = LRState, settings: str | None = None, data: str | None = None) -> dict:
    """Return the completed epochs saved in ``folder``: epoch -> ``kind.from_arrays`` of its arrays.

    Args:
        folder: the checkpoints' folder.
        kind: the protocol's checkpoint class.
        settings: the protocol settings (JSON) of this run; a checkpoint saved under others is refused.
        data: :func:`data_digest` of this run's table; a checkpoint of other data (other columns, rows
            or values) is refused, since resuming from it would train a wrong model without a word.

    Raises:
        DataError: a checkpoint that cannot be read.
        ConfigError: a checkpoint of a run with other settings or on other data.
    """
    states = {}
    for path in sorted(folder.glob("epoch-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            state = kind.from_arrays(arrays)
        except (OSError, KeyError, ValueError, EOFError, DataError) as e:
            raise DataError(
                f"{path}: not a readable checkpoint ({_why(e)}); delete it to start that epoch again"
            ) from None
        saved = str(arrays["settings"]) if "settings" in arrays else None
        if settings is not None and saved is not None and saved != settings:
            raise ConfigError(
                f"{path}: saved by a run with other protocol settings ({saved}); delete {folder} to train "
                "afresh, or give this run another out folder"
            )
        if data is not None and "data" in arrays and str(arrays["data"]) != data:
            raise ConfigError(
                f"{path}: saved by a run on other data (this party's columns, rows or values differ from "
                f"its data file now); delete {folder} to train afresh, or give this run another out folder"
            )
        states[state.epoch] = state
    return states


def _write_csv(path: Path, header: list[str], columns: list[list[str]]) -> None:
    """Write ``columns`` under ``header``, all or nothing."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(zip(*columns))
    write_atomic(path, text.getvalue())


def _write_result(cfg: PartyConfig, result, stats, table=None) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "party": cfg.name,
        "role": cfg.role,
        "protocol": cfg.protocol,
        "sent_bytes": stats.sent_bytes,
        "received_bytes": stats.received_bytes,
    }
    arrays = model_file(result, cfg.protocol, cfg.settings, None if table is None else table.feature_names)
    if arrays is not None:
        save_arrays(cfg.out / "model.npz", arrays)
    if isinstance(result, LRState):
        summary.update(epochs=result.epoch, converged=result.converged, weight_change=list(result.history))
    elif isinstance(result, np.ndarray):
        _write_csv(cfg.out / "intersection.csv", ["id"], [table.select(result).id_text()])
        summary["intersection"] = len(result)
    elif result is not None:  # SecureBoost, SplitNN, FTL: their model
        summary["model"] = type(result).__name__
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _named_progress(name: str, report: Callable[[str], None]) -> Callable:
    """``report`` of anything with a ``progress()`` line (an epoch, a PSI step), named by the party."""
    return lambda step: report(f"{name}: {step.progress()}")


@contextmanager
def _telling_peers(channel):
    """Run a protocol attempt; if this party stops on an error of its own, tell its peers (the error's
    kind only) so that they stop too instead of waiting for it. A peer's going away is not told:
    the others wait for it to come back."""
    try:
        yield
    except PartyFailed:
        raise
    except Exception as e:
        channel.abort(type(e).__name__)
        raise


def run_party(cfg: PartyConfig, report: Callable[[str], None] = lambda s: None) -> dict:
    """Run this party until the protocol ends; resume after a peer goes away, up to ``cfg.retries`` times.

    Returns:
        The summary written to ``out/summary.json``.

    Raises:
        PartyFailed: a peer went away more than ``retries`` times (or never came back).
        PartyStopped: a peer stopped on an error of its own.
        HamrahError: bad data, a protocol violation.
    """
    check_writable_folder(cfg.out, "party.out")
    table = None
    if cfg.data_path is not None:
        table = read_party_csv(cfg.data_path, cfg.id_column, cfg.label_column, id_type=cfg.id_type)
    protocol = resolve(cfg.protocol)
    role, kind = protocol.roles[cfg.role], protocol.checkpoint
    folder, data = cfg.out / "checkpoints", data_digest(table)
    server = PartyServer(cfg.name, cfg.peers, cfg.listen, cfg.tls, timeout_s=cfg.timeout_s)
    progress = _named_progress(cfg.name, report)
    try:
        for attempt in range(cfg.retries + 1):
            channel = server.channel()
            kwargs: dict = {}
            if "on_epoch" in inspect.signature(role).parameters:  # progress, and a checkpoint where it has one
                kwargs["on_epoch"] = lambda s: (
                    kind is not None and _save(folder, s, settings_json(cfg.settings), data),
                    progress(s),
                )
            try:
                with _telling_peers(channel), psi.local(cfg.workers, progress):
                    if kind is not None:  # checkpoints refused (other settings or data): the peers are told
                        done = load_checkpoints(folder, kind, settings_json(cfg.settings), data)
                        kwargs["resume"] = done
                        report(
                            f"{cfg.name}: {cfg.protocol} as {cfg.role}, "
                            + (f"resuming after epoch {max(done)}" if done else "starting")
                            + f" (attempt {attempt + 1})"
                        )
                    result = role(channel, table, cfg.settings, **kwargs)
                return _write_result(cfg, result, channel.stats, table)
            except PartyFailed as e:
                channel.close()
                if attempt == cfg.retries:
                    raise
                report(
                    f"{cfg.name}: {e}; waiting for it to come back, then resuming from the last epoch "
                    "every party completed"
                )
    finally:
        server.stop()


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(
            f"{path}: not a readable model ({_why(e)}); expected the model.npz `hamrah party` wrote"
        ) from None


def _why(error: Exception) -> str:
    """Why an .npz could not be read, without numpy's advice to load pickled data (never done here)."""
    text = str(error)
    return "it holds pickled objects, which are never loaded" if "pickle" in text else text


def _scores(labels: np.ndarray | None, out: np.ndarray, regression: bool, column: str, where: str) -> dict:
    """The metrics of predictions ``out`` against the rows' ``labels`` where they have one (a blank
    label: that row is not scored): accuracy (and AUC with both classes), or the RMSE.

    Raises:
        DataError: labels that do not fit the model (not 0/1 for probabilities, not a class index).
    """
    if labels is None or not np.isfinite(labels).any():
        return {}
    known = np.isfinite(labels)
    y, out = labels[known], out[known]
    if regression:
        return {"labelled": int(known.sum()), "rmse": float(np.sqrt(np.mean((out - y) ** 2)))}
    classes = out.shape[1] if out.ndim == 2 else 2 if column == "probability" else 0
    if not classes:
        return {}
    if not np.all(np.isin(y, np.arange(classes))):
        bad = sorted(set(np.unique(y).tolist()) - set(range(classes)))[:3]
        raise DataError(f"{where}: labels {bad} do not fit the model; expected 0..{classes - 1} (or a blank cell)")
    if out.ndim == 2:
        return {"labelled": int(known.sum()), "accuracy": float(np.mean(out.argmax(axis=1) == y))}
    result = {"labelled": int(known.sum()), "accuracy": float(np.mean((out >= 0.5) == (y == 1)))}
    if 0 < y.sum() < len(y):
        from hamrah.vertical.nets import roc_auc  # imports torch: only here

        result["auc"] = roc_auc(y, out)
    return result


def predict_party(
    cfg: PartyConfig,
    data_path: Path | None,
    model_path: Path | None = None,
    report: Callable[[str], None] = lambda s: None,
) -> dict:
    """Score the rows of ``data_path`` with this party's trained model, the other parties doing the same.

    Every party with data runs it with its own rows and model (``out/model.npz`` unless ``model_path``);
    the party that learns the scores (the guest; FTL: the host, scoring rows of its own, while the
    guest runs with no rows) writes ``out/predictions.csv`` (``id`` and ``probability``; FTL ``score``;
    SecureBoost's squared error ``prediction``, its softmax ``class`` and ``p_0 .. p_(K-1)``) and, when
    its rows carry the label column, the AUC and accuracy (squared error: the RMSE) into
    ``out/predict_summary.json``.

    Returns:
        The summary written to ``out/predict_summary.json``.

    Raises:
        ConfigError: the arbiter (it takes no part), a protocol without prediction, no rows where rows
            are needed, or settings other than the model's. DataError: unreadable rows or model, other
            columns than the model's.
        PartyFailed: a peer went away.
    """
    if cfg.role == "arbiter":
        raise ConfigError(f"{cfg.name}: the arbiter takes no part in prediction; only the parties with data score rows")
    check_writable_folder(cfg.out, "party.out")
    spec = predictor(cfg.protocol)
    arrays = _load_arrays(Path(model_path) if model_path else cfg.out / "model.npz")
    table = None
    if data_path:
        table = read_party_csv(data_path, cfg.id_column, cfg.label_column, label_optional=True, id_type=cfg.id_type)
    arbiter = getattr(cfg.settings, "arbiter", None) if "arbiter" in resolve(cfg.protocol).roles else None
    parties = tuple(sorted({cfg.name, *cfg.peers} - {arbiter}))
    guest = cfg.name if cfg.role == "guest" else getattr(cfg.settings, "guest", "guest")
    server = PartyServer(cfg.name, cfg.peers, cfg.listen, cfg.tls, timeout_s=cfg.timeout_s)
    try:
        channel = server.channel()
        rows = f"{len(table.ids)} rows" if table is not None else "no rows of its own"
        report(f"{cfg.name}: scoring with its {cfg.protocol} model ({rows})")
        with _telling_peers(channel), psi.local(cfg.workers, _named_progress(cfg.name, report)):
            ids, out = score(channel, table, cfg.protocol, cfg.settings, arrays, guest, parties)
    finally:
        server.stop()
    summary: dict = {"party": cfg.name, "protocol": cfg.protocol, "rows": 0 if table is None else len(table.ids)}
    summary["scored"] = len(ids)
    if out is not None:
        scored = table.select(ids)
        regression = str(arrays.get("objective", "")) == "reg:squarederror"  # SecureBoost's squared error
        column = "prediction" if regression else spec.output
        summary.update(_scores(scored.labels, out, regression, column, f"{data_path}: {cfg.label_column}"))
        if out.ndim == 2:  # class probabilities (SecureBoost's softmax): the likeliest class, then each one's
            header = ["id", "class", *(f"p_{k}" for k in range(out.shape[1]))]
            values = [out.argmax(axis=1).tolist(), *([f"{p:.9g}" for p in col] for col in out.T)]
        else:
            header, values = ["id", column], [[f"{p:.9g}" for p in out]]
        _write_csv(cfg.out / "predictions.csv", header, [scored.id_text(), *values])
        summary["predictions"] = str(cfg.out / "predictions.csv")
    (cfg.out / "predict_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["load_checkpoints", "predict_party", "run_party"]
