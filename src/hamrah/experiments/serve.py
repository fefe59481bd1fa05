"""Resolve a server config (the experiment sections plus ``[server]``) and the device-side helpers
(stores from a partition, fleets) into the objects of :mod:`hamrah.server` and :mod:`hamrah.device`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hamrah.algorithms import Scaffold, build
from hamrah.core.errors import ConfigError, DataError
from hamrah.device.store import check_ttl, import_partition, new_store
from hamrah.experiments.config import ExperimentConfig, from_dict, read_toml, refuse_empty, user_task
from hamrah.experiments.config_resolve import algorithm_hyperparameters
from hamrah.experiments.export import write_model
from hamrah.experiments.runner import prepare
from hamrah.loop import RunPlan
from hamrah.models import ModelSpec
from hamrah.observe.dashboard import DashboardConfig, dashboard_config
from hamrah.server.app import ServerSetup
from hamrah.server.config import ServerConfig, server_config, site_count
from hamrah.task import Task, load_task
from hamrah.transport.plan import EXAMPLE_PRIVACY_KEY, PERSONAL_KEY, TaskRef
from hamrah.transport.security import TokenRegistry


def load_server_config(path: str | Path) -> tuple[ExperimentConfig, ServerConfig]:
    """Read a TOML file with ``[data]``, ``[model]``, ``[algorithm]``, ``[run]`` and ``[server]``.

    Relative file paths in ``[server]`` (tokens, TLS) are taken relative to the config file.

    Raises:
        ConfigError: the file is missing or not TOML, or a key, type or value is wrong.
    """
    path = Path(path)
    raw = read_toml(path)
    refuse_empty(raw, path)
    table = raw.pop("server", {})
    raw.pop("dashboard", None)  # read by load_dashboard_config
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [server] must be a table of keys")
    try:
        exp, srv = from_dict(raw, path.parent), server_config(table)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    files = {
        k: str((path.parent / v).resolve())
        for k in ("tokens_file", "revoked_file", "tls_cert", "tls_key", "client_ca")
        if (v := getattr(srv, k)) is not None
    }
    return exp, dataclasses.replace(srv, **files)


def load_dashboard_config(path: str | Path) -> DashboardConfig | None:
    """Read a server config's ``[dashboard]`` section (None: absent); a relative token_file is taken
    relative to the config file.

    Raises:
        ConfigError: a wrong key or value, or a non-loopback host without allow_remote and a token file.
    """
    path = Path(path)
    table = read_toml(path).get("dashboard")
    if table is None:
        return None
    try:
        return dashboard_config(table, path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def server_setup(exp: ExperimentConfig, srv: ServerConfig) -> ServerSetup:
    """Build what the server needs: algorithm, task (and a built-in's model spec), test data, goal, run settings.

    The task is resolved exactly as the simulator resolves it (``[task] entry`` / ``name``, or ``[model]
    name``: :func:`hamrah.experiments.runner.prepare`). A user task's plan names it (name, version,
    digest, the training schema) and carries no ``ModelSpec``; the server scores the global model with
    the task's metrics on its test data, when the task has any and ``server.test_set`` is on.

    ``server.max_example_weight = 0`` resolves to the largest client of the configured partition, so
    honest devices keep their paper weights and no report counts for more than the largest client.
    """
    prep = prepare(exp)
    ds = prep.data.dataset
    if srv.cross_silo:  # every site every round
        tokens = TokenRegistry(srv.tokens_file, srv.revoked_file).count() if srv.tokens_file else None
        goal = site_count(srv, tokens)
    else:
        goal = srv.goal(prep.algorithm.cohort_size(prep.data.num_clients))
    if isinstance(prep.algorithm, Scaffold):  # refused in every full round otherwise
        sites = f"{goal} sites (server.sites, or the tokens_file's devices) give"
        prep.algorithm.check_round_size(goal, f"{sites if srv.cross_silo else 'server.goal_count ='} {goal}")
    if not srv.test_set and exp.run.stop_at_target:
        raise ConfigError(
            "run.stop_at_target with server.test_set = false: the target is a test accuracy and the server "
            "holds no test set; expected stop_at_target = false (or a test set)"
        )
    if srv.min_reports is not None and srv.min_reports > goal:
        raise ConfigError(f"server.min_reports = {srv.min_reports}: expected at most the goal count ({goal})")
    _check_evaluation_privacy(exp, srv)
    if exp.homomorphic_encryption is not None and srv.reports_needed(goal) < 2:
        raise ConfigError(
            f"[homomorphic_encryption] with rounds committed on {srv.reports_needed(goal)} report: the decrypted "
            "sum of one report is that device's update; expected server.min_reports >= 2"
        )
    if srv.max_example_weight == 0:  # the weight the server trusts: the largest client it knows of
        srv = dataclasses.replace(srv, max_example_weight=max(1, int(prep.data.client_sizes().max())))
    r = exp.run
    config = exp.to_dict()
    config["server"] = dataclasses.asdict(srv)
    plan = algorithm_plan(exp, prep.data.num_clients)
    task = prep.task
    user = user_task(exp)
    ref = TaskRef(task.task_name, task.version, task.digest(), not user, ds.info.get("schema") if user else None)
    test = ds.test if srv.test_set and len(ds.test) else None
    return ServerSetup(
        server=srv,
        run=RunPlan(r.rounds, r.seed, r.eval_every, r.target_accuracy, r.stop_at_target),
        algorithm=build(**plan),
        algorithm_plan=plan,
        model=None if user else ModelSpec.of(exp.model.name, ds),
        test_data=test,
        goal=goal,
        config=config,
        ignore_index=ds.ignore_index,
        tracking=exp.tracking,
        task=task,
        task_ref=ref,
        export=_exporter(task, exp.to_dict(), ds.info.get("schema")),
        plan_extra={**example_privacy_extra(exp), **personal_extra(exp, srv)},
    )


def _check_evaluation_privacy(exp: ExperimentConfig, srv: ServerConfig) -> None:
    """Refuse federated evaluation where the DP guarantee holds against the server (DP-SGD, local and
    distributed DP): the devices would send it the global model's loss and accuracy on their own
    examples, un-noised and outside the epsilon (their training reports carry none, ``device.compute``)."""
    mode = exp.privacy.mode if exp.privacy is not None else None
    if mode not in ("dpsgd", "local", "distributed"):
        return
    for key in ("eval_devices", "site_eval_fraction"):
        if getattr(srv, key) > 0:
            raise ConfigError(
                f"server.{key} = {getattr(srv, key)} with privacy.mode = {mode!r}: devices would send the "
                "server the global model's loss and accuracy on their own examples, un-noised and outside the "
                f"epsilon, and {mode!r} protects them from the server; expected server.{key} = 0 (the server "
                "scores the model on its own test set)"
            )


def example_privacy_extra(exp: ExperimentConfig) -> dict:
    """Return what a DP-SGD run's plans carry for each device's own ledger (delta, target, accountant)."""
    p = exp.privacy
    if p is None or p.mode != "dpsgd":
        return {}
    return {EXAMPLE_PRIVACY_KEY: {"delta": p.delta, "target_epsilon": p.target_epsilon, "accountant": p.accountant}}


def personal_extra(exp: ExperimentConfig, srv: ServerConfig) -> dict:
    """Return what a personalized run's plans carry: the share of its examples each device holds out to
    score the global model and its own on (``docs/personalization.md``).

    Raises:
        ConfigError: a cross-silo site would hold out examples twice.
    """
    own = exp.personalization
    if own is None:
        return {}
    if srv.cross_silo and srv.site_eval_fraction > 0:
        raise ConfigError(
            f"personalization.holdout = {own.holdout} and server.site_eval_fraction = {srv.site_eval_fraction}: "
            "both hold out a share of each site's examples; expected site_eval_fraction = 0 with personalization"
        )
    return {PERSONAL_KEY: {"holdout": own.holdout}}


def _exporter(task: Task, config: dict, schema: str | None):
    """Return what the server calls with its final model: write ``model.safetensors`` and ``manifest.json``
    into its state folder, as ``hamrah run`` does (:func:`hamrah.experiments.export.write_model`)."""

    def export(folder, model, params, metrics) -> None:
        write_model(folder, model, params, task, config, metrics, schema)

    return export


def algorithm_plan(exp: ExperimentConfig, num_clients: int) -> dict:
    """Return the algorithm's name and hyperparameters: what the FL plan carries to devices."""
    a = exp.algorithm
    plan = {"name": a.name, "client_fraction": a.client_fraction, **algorithm_hyperparameters(exp)}
    if a.name == "scaffold":
        plan["num_clients"] = num_clients
    return plan


def installed_task(exp: ExperimentConfig) -> Task | None:
    """Return the user task a device config names (``[task] entry``), built without reading its data; None
    for a built-in task (a built-in model's plan needs nothing installed).

    Raises:
        ConfigError: the task does not import or is incomplete (one line, as ``hamrah run`` says it).
    """
    if not user_task(exp):
        return None
    t = exp.task
    return load_task(t.entry, t.kwargs, t.path)


def import_client(prep, client: int, path: str | Path, ttl_s: float | None = None) -> int:
    """Fill a new Example Store at ``path`` with client ``client`` of a prepared config's partition.

    A user task's client gets its records of named fields under the training schema (what the plan
    names and the device reads back with ``ExampleStore.examples``); a built-in data set's, ``x, y``.
    The store's folders are made; it is written to ``PATH.partial`` and renamed: all or nothing (the
    partial file is removed on any error).

    Raises:
        ConfigError: no such client.
        DataError: ``path`` exists, or a bad ``ttl_s`` (checked before anything is written).
    """
    fed = prep.data
    if not 0 <= client < fed.num_clients:
        raise ConfigError(f"client {client}: the partition has clients 0..{fed.num_clients - 1}")
    path = _check_new(path, ttl_s)
    examples = fed.dataset.info.get("train_examples")
    part = fed.client_data(client) if examples is None else examples.take(fed.client_indices[client])
    return _fill_new(path, part, ttl_s)


def import_local(task: Task, source: str | Path, path: str | Path, ttl_s: float | None = None) -> int:
    """Fill a new Example Store at ``path`` with one site's own files at ``source``, read by the task's
    ``local_data`` (named fields under its schema, or ``x, y`` where the task's data are arrays);
    return the count. Written to ``PATH.partial`` and renamed: all or nothing.

    Raises:
        ConfigError: ``local_data`` raised or returned something else. DataError: ``path`` exists, a
            bad ``ttl_s`` or files that do not fit.
    """
    from hamrah.data.examples import Examples
    from hamrah.data.federated import ArrayData
    from hamrah.task.base import call_user

    path = _check_new(path, ttl_s)
    data = call_user(f"task {task.task_name}: local_data({str(source)!r})", lambda: task.local_data(source))
    if not isinstance(data, (Examples, ArrayData)):
        raise ConfigError(
            f"task {task.task_name}: local_data() returned a {type(data).__name__}, expected Examples or ArrayData"
        )
    if len(data) == 0:
        raise DataError(f"{source}: no examples to import")
    return _fill_new(path, data, ttl_s)


def _check_new(path: str | Path, ttl_s: float | None) -> Path:
    """Refuse an existing store path or a bad ``ttl_s`` before anything is read or written."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: already exists; choose a new store path")
    check_ttl(ttl_s)
    return path


def _fill_new(path: Path, data, ttl_s: float | None) -> int:
    """Fill a new store with ``data``: named fields under its schema (Examples), or ``x, y`` (ArrayData)."""
    from hamrah.data.federated import ArrayData

    if isinstance(data, ArrayData):
        return import_partition(path, data, ttl_s)
    with new_store(path, data.schema) as store:
        return store.append_many({name: data[name] for name in data.schema.names}, ttl_s=ttl_s)


def import_stores(exp: ExperimentConfig, out_dir: str | Path, clients: list[int]) -> list[Path]:
    """Create one Example Store per client of the config's partition (kept if already there). A store
    holds all of its client's examples: a device of a personalized run holds out its share itself,
    the same examples the simulator holds out for that client."""
    prep = prepare(dataclasses.replace(exp, personalization=None))
    n = prep.data.num_clients
    if any(not 0 <= c < n for c in clients):  # before any store is written
        raise ConfigError(f"clients {min(clients)}..{max(clients)} asked for, the partition has clients 0..{n - 1}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in clients:
        p = out / f"client_{c:05d}.db"
        if not p.exists():
            import_client(prep, c, p)
        paths.append(p)
    return paths
