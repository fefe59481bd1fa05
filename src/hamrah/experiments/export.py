"""Getting the model out: a run's final global model as ``model.safetensors`` beside ``manifest.json``.

The manifest names the task (name, version, digest), the config (its digest), the final metrics and
the hamrah version. ``hamrah evaluate`` scores a saved model on the task's test data, ``hamrah predict``
writes its predictions for a CSV file. Loading it into the user's own module takes three lines::

    from safetensors.torch import load_file
    model = Hospital().model()
    model.load_state_dict(load_file("runs/hospital/model.safetensors"))
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

import hamrah
from hamrah.core.errors import ConfigError, DataError
from hamrah.core.files import write_atomic
from hamrah.core.params import Params
from hamrah.task import Task
from hamrah.task.base import call_user
from hamrah.task.checks import check_model, check_predictions, user_code

MODEL_FILE, MANIFEST_FILE = "model.safetensors", "manifest.json"
CHECKPOINT_FILE, CHECKPOINT_META = "checkpoint.safetensors", "checkpoint.json"  # hamrah run --resume
RUN_FILES = ("summary.json", "metrics.jsonl", "failed.json", MODEL_FILE, MANIFEST_FILE, CHECKPOINT_META)


def config_digest(config: Mapping) -> str:
    """Return the sha256 of a resolved config (``ExperimentConfig.to_dict()``) as canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def holds_a_run(folder: str | Path) -> bool:
    """Return True when ``folder`` holds a previous run's files."""
    return any((Path(folder) / name).exists() for name in RUN_FILES)


def write_model(
    out: str | Path,
    model: nn.Module,
    params: Params,
    task: Task,
    config: Mapping,
    metrics: Mapping[str, float | None],
    schema_json: str | None = None,
) -> None:
    """Write ``model.safetensors`` (``model``'s state with ``params`` as its parameters) and ``manifest.json``.

    Each file is written all or nothing (:func:`~hamrah.core.files.write_atomic`).
    """
    from safetensors.torch import save

    out = Path(out)
    state = {**model.state_dict(), **params}
    write_atomic(out / MODEL_FILE, save({k: v.detach().to("cpu").contiguous() for k, v in state.items()}))
    manifest = {
        "task": task.task_name,
        "task_version": task.version,
        "task_digest": task.digest(),
        "task_class": f"{type(task).__module__}.{type(task).__qualname__}",
        "config_digest": config_digest(config),
        "metrics": {k: (None if v is None or not math.isfinite(v) else v) for k, v in metrics.items()},
        "hamrah_version": hamrah.__version__,
        "schema": None if schema_json is None else json.loads(schema_json),
        "files": [MODEL_FILE],
    }
    write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")


def read_model(folder: str | Path, task: Task) -> tuple[nn.Module, dict]:
    """Return ``task``'s model loaded with the weights saved in ``folder``, and the manifest.

    Raises:
        ConfigError: no saved model in ``folder``, or it belongs to another task or does not fit its model.
    """
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / MANIFEST_FILE).is_file():
        raise ConfigError(f"{folder}: no {MODEL_FILE} and {MANIFEST_FILE} here; expected the --out folder of a run")
    manifest, weights, _ = _read_saved(folder, MANIFEST_FILE, MODEL_FILE, "saved model")
    if manifest.get("task") != task.task_name:
        raise ConfigError(
            f"{folder}: the model is of task {manifest.get('task')!r}, the config's task is {task.task_name!r}"
        )
    model = check_model(task, call_user(f"task {task.task_name}: model()", task.model))
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(
            f"{folder}/{MODEL_FILE} does not fit task {task.task_name}'s model: {' '.join(first[:2])}"
        ) from None
    return model.eval(), manifest


@torch.no_grad()
def predict_csv(
    model: nn.Module,
    task: Task,
    manifest: Mapping,
    source: str | Path,
    output: str | Path,
    batch_size: int = 2000,
    keep: Sequence[str] = (),
) -> int:
    """Write ``task.predict`` of ``model`` on every row of the CSV ``source`` to ``output``; return the row count.

    The CSV's feature columns are read under the training data's schema (kept in the manifest), so
    categorical values get the training codes. A label column, if present, is ignored. Where the
    training labels were text, ``prediction`` holds the class names, not their codes. ``keep``: columns
    of ``source`` copied as written beside each row's predictions (an id, a name).

    Raises:
        DataError: the manifest holds no table schema, or the CSV does not match it.
    """
    from hamrah.data.loaders import SourceSpec, load_examples
    from hamrah.data.schema import Schema
    from hamrah.data.tabular import read_columns

    if manifest.get("schema") is None:
        raise DataError(f"task {task.task_name}: its training data was not a table; predict reads CSV files only")
    schema = Schema.from_json(json.dumps(manifest["schema"]), "manifest.json schema")
    features = Schema(tuple(f for f in schema.fields if f.name != schema.label))
    x = load_examples(source, SourceSpec(format="csv"), features).to_array_data().x
    names = schema.field(schema.label).categories if schema.label is not None else None
    columns: dict[str, list] = {}
    with user_code(task, "predicting"):  # the user's model or predict() raising: one line naming the task
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            for name, values in check_predictions(task, task.predict(model(batch)), len(batch)).items():
                for column, part in _split_columns(name, values, names).items():
                    columns.setdefault(column, []).extend(part.tolist())
    clash = sorted(set(keep) & {"row", *columns})
    if clash:
        raise ConfigError(f"--keep {clash[0]}: the output has a column of that name already; expected another column")
    kept = read_columns(source, keep) if keep else {}
    if names is not None and "prediction" in columns:  # text labels: the class names, as the training file wrote them
        columns["prediction"] = [names[int(c)] if 0 <= int(c) < len(names) else c for c in columns["prediction"]]
    columns = {**kept, **columns}

    def rows(f) -> None:  # streamed into the file, not built in memory
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(["row", *columns])
        writer.writerows([r, *(columns[c][r] for c in columns)] for r in range(len(x)))
        text.flush()
        text.detach()  # leaves ``f`` open for write_atomic

    write_atomic(output, rows)
    return len(x)


def _split_columns(name: str, values: torch.Tensor, classes: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """One output column per row value; a ``[B, K]`` value becomes ``name_<k>`` (``name_<class>`` where K is
    the number of text classes: ``probability_cat``)."""
    if values.dim() <= 1:
        return {name: values}
    values = values.reshape(len(values), -1)
    labels = classes if classes is not None and len(classes) == values.shape[1] else range(values.shape[1])
    return {f"{name}_{label}": values[:, k] for k, label in enumerate(labels)}


def write_checkpoint(out: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
    """Write a simulation checkpoint (``hamrah.simulation.resume.snapshot``) beside the run's files.

    The meta travels inside the tensors' file (its header), which is renamed into place: a checkpoint is
    whole or absent, whenever the process is killed. ``checkpoint.json``, a copy of the meta for people
    and tools, follows it; a kill between the two leaves it a round behind, which resuming ignores.
    """
    from safetensors.torch import save

    out = Path(out)
    text = json.dumps(dict(meta), indent=2) + "\n"
    write_atomic(out / CHECKPOINT_FILE, save(dict(tensors), metadata={"round": str(meta["round"]), "meta": text}))
    write_atomic(out / CHECKPOINT_META, text)


def remove_checkpoint(out: str | Path) -> None:
    """Delete a folder's checkpoint (a run that starts anew in it must not be resumed from an older one)."""
    for name in (CHECKPOINT_FILE, CHECKPOINT_META):
        (Path(out) / name).unlink(missing_ok=True)


def read_checkpoint(out: str | Path, config: Mapping) -> tuple[dict[str, torch.Tensor], dict]:
    """Return a run folder's checkpoint (tensors, meta) for resuming under ``config``.

    Raises:
        ConfigError: no checkpoint, a damaged one, or one made under another config (``run.rounds``
            may change: a run can be extended).
    """
    out = Path(out)
    if not (out / CHECKPOINT_FILE).is_file():
        raise ConfigError(f"{out}: no checkpoint to resume from (run it with --out {out} first)")
    tensors, header = _read_tensors(out / CHECKPOINT_FILE, "checkpoint")
    if "meta" in header:  # the meta written with the tensors (checkpoint.json may be a round behind)
        try:
            meta = json.loads(header["meta"])
        except ValueError as e:
            raise ConfigError(f"{out}/{CHECKPOINT_FILE}: its meta cannot be read ({e})") from None
    else:  # a checkpoint of an earlier hamrah: the meta only in checkpoint.json
        if not (out / CHECKPOINT_META).is_file():
            raise ConfigError(
                f"{out}: no {CHECKPOINT_META} beside {CHECKPOINT_FILE}; expected the files hamrah run wrote"
            )
        meta, tensors, header = _read_saved(out, CHECKPOINT_META, CHECKPOINT_FILE, "checkpoint")
    if not isinstance(meta, dict):
        raise ConfigError(f"{out}/{CHECKPOINT_FILE}: its meta is not a JSON object; expected the file hamrah run wrote")
    saved_round = header.get("round")
    if saved_round != str(meta.get("round")):
        raise ConfigError(f"{out}: checkpoint files of different rounds ({saved_round} and {meta.get('round')})")
    if meta.get("config_digest") != resume_digest(config):
        raise ConfigError(
            f"{out}: the checkpoint was made under another config; expected the same config (only run.rounds "
            "may change)"
        )
    return tensors, meta


def _read_saved(folder: Path, meta_name: str, tensors_name: str, what: str) -> tuple[dict, dict, dict]:
    """Read a run's JSON object and the safetensors file beside it: (the object, the tensors, the tensor
    file's metadata).

    Raises:
        ConfigError: either file is damaged, or the JSON is not an object.
    """
    try:
        meta = json.loads((folder / meta_name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}: the {what} cannot be read ({e}); expected the files hamrah run wrote") from None
    tensors, header = _read_tensors(folder / tensors_name, what)
    if not isinstance(meta, dict):
        raise ConfigError(f"{folder}/{meta_name}: expected a JSON object (the {what} hamrah run wrote)")
    return meta, tensors, header


def _read_tensors(path: Path, what: str) -> tuple[dict, dict]:
    """Read a safetensors file: (the tensors, its metadata). Raises ConfigError when it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as e:
        raise ConfigError(
            f"{path.parent}: the {what} cannot be read ({e}); expected the files hamrah run wrote"
        ) from None
    return tensors, header


def resume_digest(config: Mapping) -> str:
    """Return the digest a checkpoint is matched by: the config without ``run.rounds``."""
    run = {k: v for k, v in dict(config.get("run", {})).items() if k != "rounds"}
    return config_digest({**config, "run": run})
