"""Score new rows with a trained vertical model, between the parties that trained it.

Each party loads its own half of the model from the arrays its training saved (``model.npz``,
:func:`hamrah.vertical.saved.model_file`) and reads its own columns of the rows to score. The parties
first align those rows on the ids they all hold (PSI: no party learns another's other ids), then run
the protocol's own prediction messages (each party loads and checks its model before any message):

- vertical LR (``coordinated_lr``, ``sshe_lr``): each host sends its partial scores ``X_B w_B``; the
  guest adds its own and the intercept. No weight leaves its party; the arbiter takes no part.
- SecureBoost: the guest sends the ids; each host answers one "goes left" bit per row and split it
  owns; the guest walks the trees (no host threshold or feature is revealed).
- SplitNN: each host sends its cut-layer activations (in the training's wire dtype, with its noise);
  the guest runs its bottom and top networks.
- FTL: no alignment: the host scores rows of its own (it has no labels, and its rows are not the
  guest's) with its representation network and the guest's ``Phi``, exchanged as at the end of
  training (encrypted and masked in ``paillier`` mode); the guest needs no rows.

Only the guest (the label holder) learns the probabilities; in FTL the host learns its rows' scores.
Each protocol has a loader ``load(arrays, config, name, guest, hosts)`` that rebuilds this party's half
of the model (refusing an array set that is not one) and returns ``run(channel, table)``: the scores at
the party that learns them, one per row of ``table``, or ``None``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from hamrah.core.errors import ConfigError, DataError
from hamrah.data.vertical import PartyTable
from hamrah.vertical.psi import align
from hamrah.vertical.saved import need, settings_json

Arrays = Mapping[str, np.ndarray]
Run = Callable[..., "np.ndarray | None"]


def _under(arrays: Arrays, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: np.asarray(v) for k, v in arrays.items() if k.startswith(prefix)}


def _load_network(network, arrays: Arrays, prefix: str, what: str):
    """Load the ``prefix``-ed tensors into ``network`` (built from the config); refuse another shape."""
    import torch

    state = {k: torch.from_numpy(np.array(v)) for k, v in _under(arrays, prefix).items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(f"model: the {what} does not fit the protocol's config ({first})") from None
    return network.eval()


def load_lr(arrays: Arrays, config, name: str, guest: str, hosts: tuple[str, ...]) -> Run:
    """Vertical LR (both protocols): the host sends ``X_B w_B``, the guest returns the probabilities."""
    from hamrah.vertical.lr_common import LRState, predict_guest, predict_host, standardise

    what = "vertical LR model"
    state = LRState(
        0,
        need(arrays, "weights", what).astype(np.float64),
        need(arrays, "mean", what),
        need(arrays, "std", what),
        quantiles=np.asarray(arrays.get("quantiles", np.zeros((0, 0)))),
    )
    is_guest = name == guest
    if len(state.weights) != len(state.mean) + is_guest:
        raise DataError(f"model: {len(state.weights)} weights for {len(state.mean)} features: not a {name} model")

    def run(channel, table: PartyTable):
        if table.features.shape[1] != len(state.mean) or not np.all(np.isfinite(table.features)):
            raise DataError(f"{name}: expected {len(state.mean)} finite features, got shape {table.features.shape}")
        z, *_ = standardise(table.features, state, is_guest, config.clip, config.transform)
        if not is_guest:
            return predict_host(channel, z, state.weights, guest)
        return predict_guest(channel, z, state.weights, hosts)

    return run


def load_secureboost(arrays: Arrays, config, name: str, guest: str, hosts: tuple[str, ...]) -> Run:
    """SecureBoost: hosts answer split decisions, the guest walks the trees."""
    from hamrah.vertical.secureboost_model import guest_model, host_model, predict_guest, predict_host

    if name != guest:
        host = host_model(arrays)
        return lambda channel, table: predict_host(channel, host, table, guest)
    model = guest_model(arrays)
    missing = sorted(set(model.hosts) - set(hosts))
    if missing:
        raise ConfigError(f"the model's hosts {missing} are not among the scoring parties {sorted(hosts)}")
    return lambda channel, table: predict_guest(channel, model, table)


def load_splitnn(arrays: Arrays, config, name: str, guest: str, hosts: tuple[str, ...]) -> Run:
    """SplitNN: hosts send cut-layer activations, the guest runs its bottom and top networks."""
    from hamrah.vertical.nets import Standardizer
    from hamrah.vertical.splitnn import predict, serve
    from hamrah.vertical.splitnn_core import BottomModel, GuestModel, bottom_network, top_network

    is_guest = name == guest
    prefix = "model.bottom." if is_guest else ""
    what = f"SplitNN {'guest' if is_guest else 'host'} model"
    names = tuple(str(n) for n in need(arrays, f"{prefix}feature_names", what).reshape(-1))
    scaler = Standardizer(
        need(arrays, f"{prefix}standardizer.mean", what), need(arrays, f"{prefix}standardizer.scale", what)
    )
    network = _load_network(bottom_network(config, name, len(names)), arrays, f"{prefix}network.", "bottom network")
    bottom = BottomModel(name, names, scaler, network)
    if not is_guest:
        return lambda channel, table: serve(channel, bottom, table, config, guest)
    trained = tuple(str(h) for h in need(arrays, "model.hosts", what).reshape(-1))
    top = _load_network(top_network(config, 1 + len(trained)), arrays, "model.top.", "top network")
    model = GuestModel(bottom, top, trained)
    return lambda channel, table: predict(channel, model, table, config, table.ids)


def load_ftl(arrays: Arrays, config, name: str, guest: str, hosts: tuple[str, ...]) -> Run:
    """FTL: the host scores rows of its own with its network and the guest's ``Phi`` (no rows at the guest)."""
    from hamrah.vertical import ftl
    from hamrah.vertical.nets import Standardizer

    if name == guest:
        phi = need(arrays, "phi", "FTL guest model").astype(np.float64).reshape(-1)
        if phi.shape != (config.dim,):
            raise DataError(f"model: Phi has {phi.size} values, the config's representation has dim = {config.dim}")
        (host,) = hosts
        return lambda channel, table: ftl.score_guest(channel, phi, config, host)
    what = "FTL host model"
    names = tuple(str(n) for n in need(arrays, "model.feature_names", what).reshape(-1))
    scaler = Standardizer(need(arrays, "model.standardizer.mean", what), need(arrays, "model.standardizer.scale", what))
    network = ftl.representation_network(config, name, len(names))
    model = ftl.FTLParty(names, scaler, _load_network(network, arrays, "model.network.", "representation network"))
    return lambda channel, table: ftl.score_host(channel, model, table, config, guest)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """How a protocol scores: its loader, whether the parties' rows are aligned by PSI first (else the
    ``learner`` scores rows of its own), who learns the scores, and what they are called."""

    load: Callable[..., Run]
    aligned: bool = True
    learner: str = "guest"
    output: str = "probability"


PREDICTORS: dict[str, Predictor] = {
    "coordinated_lr": Predictor(load_lr),
    "sshe_lr": Predictor(load_lr),
    "secureboost": Predictor(load_secureboost),
    "splitnn": Predictor(load_splitnn),
    "ftl": Predictor(load_ftl, aligned=False, learner="host", output="score"),
}


def check_model(arrays: Arrays, protocol: str, settings, table: PartyTable | None) -> None:
    """Refuse a model saved by another protocol, under other settings, or for other columns.

    Raises:
        ConfigError: the protocol or settings differ from the model's (naming the differing keys).
        DataError: the table's columns differ from those the model was trained on.
    """
    if "protocol" in arrays and str(arrays["protocol"]) != protocol:
        raise ConfigError(f"model: trained by protocol {str(arrays['protocol'])!r}, this config says {protocol!r}")
    if "settings" in arrays:
        saved, now = json.loads(str(arrays["settings"])), json.loads(settings_json(settings))
        differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if differ:
            pairs = ", ".join(f"{k} = {saved.get(k)!r} (config: {now.get(k)!r})" for k in differ)
            raise ConfigError(f"model: trained with {pairs}; score with the settings it was trained with")
    if "feature_names" in arrays and table is not None:
        trained = tuple(str(n) for n in np.asarray(arrays["feature_names"]).reshape(-1))
        if trained != table.feature_names:
            raise DataError(
                f"the rows' columns {list(table.feature_names)} differ from the model's {list(trained)} "
                "(same names, same order expected)"
            )


def score(
    channel, table: PartyTable | None, protocol: str, settings, arrays: Arrays, guest: str, parties: Sequence[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Score rows with this party's half of a trained model, together with the other ``parties``.

    Args:
        channel: this party's channel.
        table: this party's columns of the rows to score (labels, if any, stay unused); ``None`` only
            for a party that scores no rows of its own (FTL's guest).
        protocol, settings: the protocol that trained the model and its settings.
        arrays: this party's saved model (``model.npz``).
        guest: the label holder's name.
        parties: every party with data, this one included (an arbiter takes no part).

    Returns:
        The ids scored (those every party holds, sorted; FTL: the host's own) and, at the party that
        learns them (the guest; FTL: the host), their scores; ``None`` elsewhere.

    Raises:
        ConfigError, DataError: see :func:`check_model`; no rows where rows are needed; no id shared by
            every party.
        ProtocolError: a peer's message is malformed.
    """
    spec = predictor(protocol)
    check_model(arrays, protocol, settings, table)
    hosts = tuple(sorted(p for p in parties if p != guest))
    run = spec.load(arrays, settings, channel.name, guest, hosts)
    learner = (channel.name == guest) == (spec.learner == "guest")
    if table is None and (spec.aligned or learner):
        raise ConfigError(
            f"{channel.name}: no rows to score; expected this party's columns of them (hamrah party --predict "
            "ROWS.csv; Trained.predict: its table)"
        )
    if not spec.aligned:  # the learner scores rows of its own
        out = run(channel, table)
        return (table.ids, out) if learner else (np.zeros(0, np.int64), None)
    rows = align(channel, table, guest, tuple(parties), "prediction")
    out = run(channel, rows)
    return rows.ids, (out if learner else None)


def predictor(protocol: str) -> Predictor:
    """Return how ``protocol`` scores new rows.

    Raises:
        ConfigError: the protocol trains no model (PSI).
    """
    if protocol not in PREDICTORS:
        raise ConfigError(
            f"protocol {protocol!r}: no prediction (it trains no model that scores new rows); prediction "
            f"works for {', '.join(PREDICTORS)}"
        )
    return PREDICTORS[protocol]


__all__ = [
    "PREDICTORS",
    "Predictor",
    "check_model",
    "load_ftl",
    "load_lr",
    "load_secureboost",
    "load_splitnn",
    "predictor",
    "score",
]
