"""What hamrah checks of a user's task code where it calls it: the model it builds, the loss and the
metrics it returns, and the exceptions it raises while training or evaluating, each one line naming the
task and what was expected (a traceback of the user's code would say neither)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hamrah.core.errors import ConfigError, HamrahError
from hamrah.core.metrics import Metric, ScoreHistogram, Summed, Weighted
from hamrah.task.base import Task, user_error

METRIC_KINDS = "a Weighted, Summed, Perplexity or ScoreHistogram"


def is_user_task(task: Task) -> bool:
    """True for a task defined outside hamrah (hamrah's own kinds and built-ins run hamrah's code only)."""
    return not type(task).__module__.startswith("hamrah.")


@contextmanager
def user_code(task: Task, what: str) -> Iterator[None]:
    """Run a block that calls a user task's model, loss or metrics: an exception it raises (other than
    hamrah's own errors) becomes one ConfigError line, ``task T: <what> raised <kind>: <message> (at
    file:line)``. A built-in task's exceptions pass unchanged (they are hamrah's bugs, with a traceback).

    Raises:
        ConfigError: the block raised.
    """
    if not is_user_task(task):
        yield
        return
    try:
        yield
    except HamrahError:
        raise
    except Exception as e:
        raise user_error(f"task {task.task_name}: {what}", e) from e


def check_model(task: Task, model: object) -> nn.Module:
    """Return ``model`` (what ``task.model()`` built) if hamrah can federate it: an ``nn.Module`` with at
    least one parameter, every parameter a floating tensor that requires a gradient.

    Raises:
        ConfigError: naming the task and the parameter at fault.
    """
    name = task.task_name
    if not isinstance(model, nn.Module):
        raise ConfigError(f"task {name}: model() returned a {type(model).__name__}; expected a torch.nn.Module")
    params = list(model.named_parameters())
    if not params:
        raise ConfigError(f"task {name}: its model has no parameters; expected at least one nn.Parameter to train")
    for key, p in params:
        if not p.is_floating_point() or not p.requires_grad:
            why = f"is {p.dtype}" if not p.is_floating_point() else "has requires_grad=False"
            raise ConfigError(
                f"task {name}: its model's parameter {key!r} {why}; expected every parameter a floating tensor "
                "that is trained (hamrah federates every parameter; keep a fixed tensor as a buffer: "
                "register_buffer)"
            )
    return model


def check_output(task: Task, output: object, y: torch.Tensor) -> None:
    """Refuse a model output a kind's own loss cannot read: a classification task's logits are the
    targets' shape plus the classes, a regression task's the targets' shape (or with a trailing 1).

    A task with a loss of its own reads its own outputs: nothing is checked.

    Raises:
        ConfigError: an output that is not a floating tensor, or of another shape; naming the expected one.
    """
    from hamrah.task.kinds import ClassificationTask, RegressionTask

    if getattr(type(task).loss, "__module__", None) != "hamrah.task.kinds":
        return
    kind = next(k.__name__ for k in type(task).__mro__ if k.__module__ == "hamrah.task.kinds")
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        got = f"a {output.dtype} tensor" if isinstance(output, torch.Tensor) else f"a {type(output).__name__}"
        raise ConfigError(f"task {task.task_name}: its model returned {got}; a {kind} expects a floating tensor")
    shape, want = tuple(output.shape), tuple(y.shape)
    if isinstance(task, ClassificationTask):
        ok, expected = shape[:-1] == want and len(shape) == len(want) + 1, f"{(*want, 'classes')}".replace("'", "")
    elif isinstance(task, RegressionTask):
        ok, expected = shape in (want, (*want, 1)), f"{want} or {(*want, 1)}"
    else:
        return
    if not ok:
        raise ConfigError(
            f"task {task.task_name}: its model's output has shape {shape} for targets of shape {want}; "
            f"a {kind} expects {expected}"
        )


def check_loss(task: Task, loss: object) -> torch.Tensor:
    """Return ``loss`` (what ``task.loss`` returned) if it is a 0-d tensor with a gradient.

    Raises:
        ConfigError: anything else, naming what it was.
    """
    if isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad:
        return loss
    name = task.task_name
    if not isinstance(loss, torch.Tensor):
        got = f"a {type(loss).__name__}"
    elif loss.ndim:
        got = f"a tensor of shape {tuple(loss.shape)}"
    else:
        raise ConfigError(
            f"task {name}: loss() returned a tensor with no gradient; expected it computed from the model's "
            "output in torch operations (no .item(), .detach(), torch.no_grad() or integer results)"
        )
    raise ConfigError(f"task {name}: loss() returned {got}; expected a 0-d tensor (the batch's mean loss)")


def check_finite_loss(task: Task, loss: torch.Tensor) -> None:
    """Refuse a loss that is NaN or infinite on the untrained model (a log of 0, a division by 0).

    Raises:
        ConfigError: naming the value.
    """
    value = float(loss.detach())
    if not math.isfinite(value):
        raise ConfigError(
            f"task {task.task_name}: loss() of the untrained model on two training examples is {value}; "
            "expected a finite number"
        )


def check_metrics(task: Task, metrics: object) -> dict[str, Metric]:
    """Return ``metrics`` (what ``task.metrics`` returned) if it maps names to hamrah metrics of numbers.

    Raises:
        ConfigError: not a dict, a name that is not a string, a value that is not a metric, or a metric
            of something other than Python numbers (a tensor: ``float(...)`` it).
    """
    name = task.task_name
    if not isinstance(metrics, dict):
        raise ConfigError(
            f"task {name}: metrics() returned a {type(metrics).__name__}; expected a dict of names to {METRIC_KINDS}"
        )
    for key, m in metrics.items():
        if not isinstance(key, str):
            raise ConfigError(f"task {name}: metrics() has the key {key!r}; expected metric names as strings")
        if isinstance(m, (Weighted, Summed)):
            fields = [m.total, m.weight] if isinstance(m, Weighted) else [m.total]
        elif isinstance(m, ScoreHistogram):
            fields = []
        else:
            raise ConfigError(f"task {name}: metrics()[{key!r}] is a {type(m).__name__}; expected {METRIC_KINDS}")
        bad = [f for f in fields if not isinstance(f, (int, float))]
        if bad:
            raise ConfigError(
                f"task {name}: metrics()[{key!r}] holds a {type(bad[0]).__name__}; expected Python numbers "
                f"(float(...) or int(...) of a tensor)"
            )
    return metrics


def check_predictions(task: Task, columns: object, rows: int) -> dict[str, torch.Tensor]:
    """Return ``columns`` (what ``task.predict`` returned for ``rows`` outputs) if it maps names to tensors
    of one row each.

    Raises:
        ConfigError: not a dict of string names to tensors with ``rows`` rows.
    """
    name = task.task_name
    if not isinstance(columns, dict):
        raise ConfigError(
            f"task {name}: predict() returned a {type(columns).__name__}; expected a dict of column names to tensors"
        )
    for key, values in columns.items():
        if not isinstance(key, str) or not isinstance(values, torch.Tensor):
            got = f"the key {key!r}" if not isinstance(key, str) else f"{key!r} = a {type(values).__name__}"
            raise ConfigError(f"task {name}: predict() has {got}; expected each column a tensor under a string name")
        if values.ndim == 0 or len(values) != rows:
            raise ConfigError(
                f"task {name}: predict()[{key!r}] has shape {tuple(values.shape)} for {rows} rows; "
                f"expected {rows} rows (one value or a row of values per input)"
            )
    return columns
