"""Each client's own model out of a personalized run (Ditto, FedPer): what the client would use.

``hamrah run`` saves the global model (``model.safetensors``); a personalized run's clients also keep a
part of their own (Ditto: a whole model; FedPer: its personal layers), which the run's checkpoint holds
beside the global model (``checkpoint.safetensors``, ``client/<id>/...``). :func:`personal_model` puts
the two together, exactly as the simulator scores a client's personal model.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hamrah.core.errors import ConfigError
from hamrah.core.params import load_state
from hamrah.experiments.config import ExperimentConfig
from hamrah.experiments.export import read_checkpoint
from hamrah.experiments.runner import prepare


def personal_model(folder: str | Path, cfg: ExperimentConfig, client: int) -> tuple[nn.Module, int]:
    """Return client ``client``'s own model from the run in ``folder`` made with ``cfg``, and its round.

    The model is the one of the run's last checkpoint (written after the round the run ended at, and
    every ``run.checkpoint_every`` rounds): the checkpoint's global model with the client's own part. A
    client that never trained uses what it would start from (Ditto: the global model; FedPer: the
    global model's personal layers, which are never averaged).

    Raises:
        ConfigError: a run that is not personalized, no such client, or no checkpoint of this config.
    """
    prep = prepare(cfg)
    personal = prep.algorithm.personalization
    if personal is None:
        raise ConfigError(
            f'{folder}: the run is not personalized (expected [personalization] method = "ditto" or '
            '"fedper"); every client uses the global model (model.safetensors)'
        )
    if isinstance(client, bool) or not isinstance(client, int) or not 0 <= client < prep.data.num_clients:
        raise ConfigError(f"client {client!r}: the run has clients 0..{prep.data.num_clients - 1}")
    tensors, meta = read_checkpoint(folder, cfg.to_dict())
    params = {k[len("params/") :]: v for k, v in tensors.items() if k.startswith("params/")}
    own = {k[len(f"client/{client}/") :]: v for k, v in tensors.items() if k.startswith(f"client/{client}/")}
    model = prep.model_factory()
    load_state(model, personal.personal_model(params, own or None))
    return model.eval(), int(meta["round"])


__all__ = ["personal_model"]
