"""What a device checks and splits before it trains: its store against the plan (every device), and
a cross-silo site's held-out examples (fixed for the run)."""

from __future__ import annotations

import torch

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.federated import ArrayData, split_holdout
from hamrah.data.schema import Schema
from hamrah.device.eligibility import data_blockers
from hamrah.device.store import ExampleStore
from hamrah.task import Task
from hamrah.transport.plan import CROSS_SILO_KEY, Plan


def check_task(plan: Plan, installed: Task | None) -> None:
    """Refuse a plan whose user task is not the one installed on this device (no code comes over the wire).

    Raises:
        DataError: no task installed, or another task or digest than the plan's; naming both.
    """
    ref = plan.task
    if not plan.user_task or ref is None:
        return
    if installed is None:
        raise DataError(
            f"the plan asks for {ref.describe()}; this device has no task installed "
            "(start it with --task module:attribute or --config device.toml)"
        )
    have, digest = installed.task_name, installed.digest()
    if have != ref.name or digest != ref.digest:
        raise DataError(
            f"the plan asks for {ref.describe()}; this device has task {have!r} (digest {digest}) installed"
        )


def task_data(store: ExampleStore, plan: Plan, task: Task) -> ArrayData:
    """Return the store's live (unexpired) records as the task's tensors.

    Records are read under the plan's training schema (else the task's declared one) and converted
    exactly as the simulator converts the task's data (``Examples.to_array_data``, through
    :func:`hamrah.task.examples_dataset`).

    Raises:
        DataError: the store holds another schema, or no live records; one line naming what was expected.
    """
    ref = plan.task
    expected = Schema.from_json(ref.schema, "the plan's schema") if ref is not None and ref.schema else task.schema
    problems = data_blockers(store.schema, store.count(), expected)
    if problems:
        raise DataError(f"task {task.task_name}: " + "; ".join(problems))
    return store.examples().to_array_data()


def check_inputs(model, data: ArrayData, task: Task) -> None:
    """Check that the task's model takes the store's inputs (one forward pass on the first example, in
    eval mode: BatchNorm refuses a batch of one while training).

    Raises:
        DataError: the model fails on them (whatever it raises); naming the inputs' shape.
    """
    import torch

    try:
        with torch.no_grad():
            model.eval()(data.x[:1])
    except Exception as e:  # the user's code: any exception, one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"the example store's inputs have shape {tuple(data.x.shape[1:])}; task {task.task_name}'s model "
            f"does not take them ({first})"
        ) from None


def check_store(data: ArrayData, plan: Plan) -> None:
    """Check that the store's examples fit the plan's model.

    Raises:
        DataError: no examples, inputs of another shape, or labels outside the model's classes; naming
            what the store holds and what the plan expects.
    """
    spec = plan.model
    if len(data) == 0:
        raise DataError("the example store holds no examples (or all have expired); expected at least one example")
    shape = tuple(data.x.shape[1:])
    if shape != tuple(spec.input_shape):
        raise DataError(
            f"the example store's inputs have shape {shape}; the plan's model {spec.name!r} expects {spec.input_shape}"
        )
    y = data.y if plan.ignore_index is None else data.y[data.y != plan.ignore_index]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise DataError(
            f"the example store's labels span {int(y.min())}..{int(y.max())}; the plan's model has "
            f"{spec.num_classes} classes (expected labels 0..{spec.num_classes - 1})"
        )


def site_eval_fraction(extra: dict) -> float:
    """Return the share of its examples a cross-silo site holds out (0: not a site's plan).

    Raises:
        ProtocolError: the plan's entry is malformed (a broken server's non-object stopped the device).
    """
    entry = extra.get(CROSS_SILO_KEY, {})
    if not isinstance(entry, dict):
        raise ProtocolError(f"plan: {CROSS_SILO_KEY} = {entry!r:.60}: expected an object {{eval_fraction: f}}")
    share = entry.get("eval_fraction", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ProtocolError(f"plan: {CROSS_SILO_KEY}.eval_fraction = {share!r}: expected a number in [0, 1)")
    return float(share)


def holdout(data: ArrayData, fraction: float, seed: int, client_key: int) -> tuple[ArrayData, ArrayData]:
    """Split a site's ``n >= 2`` examples into (held out, training) by :func:`hamrah.data.federated.split_holdout`."""
    h, k = (torch.from_numpy(i) for i in split_holdout(len(data), fraction, seed, client_key))
    return ArrayData(data.x[h], data.y[h]), ArrayData(data.x[k], data.y[k])


__all__ = ["check_inputs", "check_store", "check_task", "holdout", "site_eval_fraction", "task_data"]
