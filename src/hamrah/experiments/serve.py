"""Resolve a server config (the experiment sections plus ``[server]``) and the device-side helpers
(stores from a partition, fleets) into the objects of :mod:`hamrah.server` and :mod:`hamrah.device`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hamrah.algorithms import build
from hamrah.core.errors import ConfigError
from hamrah.device.store import import_partition
from hamrah.experiments.config import ExperimentConfig, algorithm_hyperparameters, from_dict, read_toml
from hamrah.experiments.runner import prepare
from hamrah.models import ModelSpec
from hamrah.observe.dashboard import DashboardConfig, dashboard_config
from hamrah.server.app import ServerSetup
from hamrah.server.config import ServerConfig, server_config, site_count
from hamrah.server.coordinator import RunPlan
from hamrah.transport.security import TokenRegistry


def load_server_config(path: str | Path) -> tuple[ExperimentConfig, ServerConfig]:
    """Read a TOML file with ``[data]``, ``[model]``, ``[algorithm]``, ``[run]`` and ``[server]``.

    Relative file paths in ``[server]`` (tokens, TLS) are taken relative to the config file.

    Raises:
        ConfigError: the file is missing or not TOML, or a key, type or value is wrong.
    """
    path = Path(path)
    raw = read_toml(path)
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
    """Build what the server needs: algorithm, model spec, test data, goal, run settings.

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
    if not srv.test_set and exp.run.stop_at_target:
        raise ConfigError(
            "run.stop_at_target with server.test_set = false: the target is a test accuracy and the server "
            "holds no test set; expected stop_at_target = false (or a test set)"
        )
    if srv.min_reports is not None and srv.min_reports > goal:
        raise ConfigError(f"server.min_reports = {srv.min_reports}: expected at most the goal count ({goal})")
    if srv.max_example_weight == 0:  # the weight the server trusts: the largest client it knows of
        srv = dataclasses.replace(srv, max_example_weight=max(1, int(prep.data.client_sizes().max())))
    r = exp.run
    config = exp.to_dict()
    config["server"] = dataclasses.asdict(srv)
    plan = algorithm_plan(exp, prep.data.num_clients)
    return ServerSetup(
        server=srv,
        run=RunPlan(r.rounds, r.seed, r.eval_every, r.target_accuracy, r.stop_at_target),
        algorithm=build(**plan),
        algorithm_plan=plan,
        model=ModelSpec.of(exp.model.name, ds),
        test_data=ds.test if srv.test_set else None,
        goal=goal,
        config=config,
        ignore_index=ds.ignore_index,
        tracking=exp.tracking,
    )


def algorithm_plan(exp: ExperimentConfig, num_clients: int) -> dict:
    """Return the algorithm's name and hyperparameters: what the FL plan carries to devices."""
    a = exp.algorithm
    plan = {"name": a.name, "client_fraction": a.client_fraction, **algorithm_hyperparameters(a)}
    if a.name == "scaffold":
        plan["num_clients"] = num_clients
    return plan


def import_stores(exp: ExperimentConfig, out_dir: str | Path, clients: list[int]) -> list[Path]:
    """Create one Example Store per client of the config's partition (kept if already there)."""
    prep = prepare(exp)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in clients:
        if not 0 <= c < prep.data.num_clients:
            raise ConfigError(f"client {c}: the partition has clients 0..{prep.data.num_clients - 1}")
        p = out / f"client_{c:05d}.db"
        if not p.exists():
            import_partition(p, prep.data.client_data(c))
        paths.append(p)
    return paths
