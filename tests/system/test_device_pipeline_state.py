"""A device keeps the update pipeline's state (top-k's error-feedback residual) only once the server has
accepted the report that carried the update, as it keeps SCAFFOLD's c_i: a refused report leaves the
residual where it was, so what was dropped is not lost with what was refused."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import torch
from tests.system.harness import device_config, make_setup

from hamrah.device import ScriptedState
from hamrah.device.runtime import DeviceRuntime
from hamrah.device.store import ExampleStore
from hamrah.experiments.config import from_dict
from hamrah.server.app import FLServer


def _experiment():
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
            "run": {"rounds": 1, "seed": 0},
            "compression": {"codec": "topk", "fraction": 0.1, "error_feedback": True},
        }
    )


def _one_task(tmp_path, **server) -> tuple[dict, object]:
    """Serve round 1 to one device running one task; return the device's pipeline state and stats."""
    setup, stores, tokens = make_setup(tmp_path, _experiment(), devices=1, goal_count=1, **server)

    async def go():
        srv = FLServer(setup, tmp_path / "state")
        port = await srv.start(0)
        serving = asyncio.ensure_future(srv.serve(linger_s=0.2))
        cfg = device_config(port, population=setup.server.population, token=tokens[0], client_key=0, max_tasks=1)
        with ExampleStore(stores[0]) as store:
            runtime = DeviceRuntime(cfg, store, ScriptedState.always())
            stats = await asyncio.wait_for(runtime.run(), 120)
        serving.cancel()  # the round may still wait for reports: its finally stops the server
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return runtime.pipeline_states, stats

    return asyncio.run(go())


@pytest.mark.slow
def test_the_residual_is_kept_once_the_report_is_accepted_and_not_when_it_is_refused(tmp_path):
    states, stats = _one_task(tmp_path / "ok")
    assert stats.reported == 1
    (residual,) = states.values()  # one chain; its top-k stage kept what it did not send
    assert any(bool(torch.count_nonzero(t)) for part in residual for t in getattr(part, "values", list)())

    states, stats = _one_task(tmp_path / "refused", max_update_mb=1e-6)  # every upload over the limit
    assert stats.refused == 1 and stats.reported == 0
    assert states == {}  # the refused report's residual was not kept
