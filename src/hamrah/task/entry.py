"""Find a user's task by import path: ``[task] entry = "hospital_task:Hospital"``.

The entry names a module (importable from the config file's folder or ``sys.path``; ``name.py`` is
accepted) and an attribute in it: a :class:`Task` subclass, an instance, or a function returning one.
The config's ``kwargs`` are passed to the class or function. Every failure is one ConfigError line.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hamrah.core.errors import ConfigError
from hamrah.task.base import Task, call_user, check_complete, check_task


def load_task(entry: str, kwargs: Mapping[str, Any] | None = None, folder: str | Path | None = None) -> Task:
    """Import ``entry`` (``"module:attribute"``) and return the task it names, built with ``kwargs``.

    Args:
        entry: ``module:attribute``; ``module`` may be dotted or a ``.py`` file name.
        kwargs: keyword arguments for the class or function (an instance takes none).
        folder: a folder to import the module from (the config file's), searched first.

    Raises:
        ConfigError: the module does not import, the attribute is missing, the object is not a task
            or lacks a method, or the keyword arguments do not fit.
    """
    where = f"task.entry = {entry!r}"
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{where}: expected 'module:attribute', e.g. 'hospital_task:Hospital'")
    module_name = module_name.removesuffix(".py").replace("/", ".")
    if folder is not None:  # the config's folder first; its own module over one of the same name imported before
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        sys.path.insert(0, str(folder))
        own = Path(folder, *module_name.split(".")).with_suffix(".py")
        cached = getattr(sys.modules.get(module_name), "__file__", None)
        if cached is not None and own.is_file() and Path(cached).resolve() != own.resolve():
            del sys.modules[module_name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            looked = f"{folder} or sys.path" if folder is not None else "sys.path"
            raise ConfigError(f"{where}: no module {module_name!r} (looked in {looked})") from None
        raise ConfigError(f"{where}: importing {module_name!r} failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's module raised while importing
        raise ConfigError(f"{where}: importing {module_name!r} failed: {type(e).__name__}: {e}") from None
    except SystemExit as e:  # a script's argparse or sys.exit at module level: it would end hamrah silently
        raise ConfigError(
            f"{where}: importing {module_name!r} called sys.exit({e.code!r}); expected a module that only "
            "defines things when imported (put a script's code under if __name__ == '__main__':)"
        ) from None
    if not hasattr(module, attr):
        raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    return build_task(getattr(module, attr), kwargs or {}, where)


def build_task(obj: Any, kwargs: Mapping[str, Any], where: str) -> Task:
    """Return the task ``obj`` is (an instance) or builds (a class or function called with ``kwargs``)."""
    if isinstance(obj, Task):
        if kwargs:
            raise ConfigError(f"{where} is a task instance; it takes no task.kwargs (got {', '.join(kwargs)})")
        return check_task(obj, where)
    if isinstance(obj, type) and not issubclass(obj, Task):
        raise ConfigError(f"{where} is the class {obj.__name__}, expected a hamrah.Task subclass")
    if not callable(obj):
        return check_task(obj, where)
    if isinstance(obj, type):
        check_complete(obj, where)  # before calling it: its constructor may read data
    try:
        inspect.signature(obj).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: task.kwargs do not fit ({e})") from None
    except ValueError:  # no signature to check (a builtin): the call says
        pass
    return check_task(call_user(where, lambda: obj(**kwargs)), where)
