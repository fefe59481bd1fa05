"""hamrah: federated learning, from a fast single-machine simulator to real server and devices.

The task API is importable from here (``hamrah.Task``, ``hamrah.BinaryTask``, ...); it loads torch on
first use only, so ``import hamrah`` stays cheap for the command line.
"""

__version__ = "0.1.0"


_TASK_API = (
    "Task",
    "ClassificationTask",
    "BinaryTask",
    "RegressionTask",
    "NextTokenTask",
    "Weighted",
    "Summed",
    "ScoreHistogram",
    "Perplexity",
    "metric_values",
    "load_task",
    "PAD_LABEL",
)


def __getattr__(name: str):
    if name in _TASK_API:
        import hamrah.task

        return getattr(hamrah.task, name)
    raise AttributeError(f"module 'hamrah' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_TASK_API])


__all__ = ["__version__", *_TASK_API]
