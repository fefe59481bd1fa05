"""What a simulation needs to go on after round r, as named tensors and JSON scalars (no I/O here).

Every random draw of a round comes from streams keyed by (seed, round, client) (:mod:`hamrah.core.seeds`),
so the state after round r is all a run needs to continue exactly as if it had never stopped: the
global model, the algorithm's server state, the clients' persistent state (SCAFFOLD's c_i) and the
counters. A client-update pipeline that keeps state across rounds (error feedback, adaptive clipping,
the privacy accountant) is not captured: such a run is refused with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from hamrah.algorithms.state import flatten_state, unflatten_state
from hamrah.core.errors import ConfigError
from hamrah.simulation.simulator import Simulator


def resume_problem(sim: Simulator) -> str | None:
    """Return why ``sim`` cannot be checkpointed and resumed exactly, or None when it can."""
    if sim.examples is not None:
        return "its per-client DP-SGD ledger is not checkpointed"
    pipe = sim.pipeline
    if pipe is None:
        return None
    if pipe.accountant is not None:
        return "its privacy accountant and budget are not checkpointed"
    if any(s is not None for s in pipe.server_state):
        return f"its pipeline ({', '.join(pipe.chain.names)}) keeps server state across rounds"
    return None


def snapshot(sim: Simulator, round_idx: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, scalars) that let a fresh simulator of the same config go on after ``round_idx``.

    Raises:
        ConfigError: :func:`resume_problem` names a reason.
    """
    problem = resume_problem(sim)
    if problem is not None:
        raise ConfigError(f"cannot checkpoint this run: {problem}")
    tensors = {f"params/{k}": v.detach().contiguous() for k, v in sim.params.items()}
    server_tensors, server_scalars = flatten_state(sim.server_state)
    tensors.update({f"server/{k}": v for k, v in server_tensors.items()})
    for client, state in sim.client_states.items():
        tensors.update({f"client/{client}/{k}": v.detach().contiguous() for k, v in state.items()})
    kept: dict[str, list[bool]] = {}  # the pipeline's client states (error feedback): which stages hold tensors
    for client, states in (sim.pipeline.client_states if sim.pipeline is not None else {}).items():
        if any(x is not None and not isinstance(x, dict) for x in states):
            raise ConfigError(f"cannot checkpoint this run: its pipeline's state of client {client} is not tensors")
        kept[str(client)] = [x is not None for x in states]
        for i, x in enumerate(states):
            tensors.update({f"pipeline/{client}/{i}/{k}": v.detach().contiguous() for k, v in (x or {}).items()})
    scalars = {
        "round": round_idx,
        "server_state": server_scalars,
        "clients": sorted(sim.client_states),
        "refused": sim.refused,
        "bytes_total": list(sim.bytes_total),
        "skipped_rounds": sim.skipped_rounds,
        "refused_aggregates": sim.refused_aggregates,
        "pipeline_clients": kept,
        "ended": sim.loop.ended.reason if sim.loop.ended is not None and sim.loop.last_round == round_idx else None,
    }
    return tensors, scalars


def restore(sim: Simulator, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> int:
    """Load a :func:`snapshot` into ``sim`` (built from the same config); return the next round to run.

    Raises:
        ConfigError: the snapshot does not fit ``sim`` (another model, algorithm or a missing tensor).
    """
    params = _part(tensors, "params/")
    if set(params) != set(sim.params) or any(params[k].shape != v.shape for k, v in sim.params.items()):
        raise ConfigError("checkpoint: its model's parameters differ from this config's model; expected the same model")
    try:
        server = unflatten_state(type(sim.server_state), _part(tensors, "server/"), scalars["server_state"])
    except Exception as e:
        raise ConfigError(
            f"checkpoint: the algorithm's server state does not fit ({e}); expected the same algorithm"
        ) from None
    sim.params, sim.server_state = params, server
    sim.client_states = {int(c): _part(tensors, f"client/{c}/") for c in scalars["clients"]}
    sim.refused, sim.bytes_total = int(scalars["refused"]), [int(b) for b in scalars["bytes_total"]]
    sim.skipped_rounds = int(scalars.get("skipped_rounds", 0))
    sim.refused_aggregates = int(scalars.get("refused_aggregates", 0))
    if sim.pipeline is not None:
        sim.pipeline.client_states = {
            int(c): tuple(_part(tensors, f"pipeline/{c}/{i}/") if held else None for i, held in enumerate(stages))
            for c, stages in scalars.get("pipeline_clients", {}).items()
        }
    return int(scalars["round"]) + 1


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
