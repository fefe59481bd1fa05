"""The client-update pipeline of a run: built from plain settings, driven round by round.

One JSON-ready :class:`PipelineSpec` is resolved from an experiment's ``[compression]`` and
``[privacy]`` sections (:func:`resolve_pipeline`), travels to devices in the FL plan's
``extra["pipeline"]`` and rebuilds the same :class:`~hamrah.core.pipeline.Chain` on every side:

- central DP: ``[DPClip, codec, CentralGaussianNoise]`` (McMahan et al. 2018; adaptive clipping of
  Andrew et al. 2021): the client clips then compresses, the server noises the aggregate;
- local DP: ``[LocalGaussian, codec]``: clipped and noised on the client, then compressed;
- compression only: ``[codec]``;
- with ``[secure_aggregation]``, :class:`~hamrah.secagg.stage.SecureAggregation` after the codec (and
  before central noise, which the server then adds to the unmasked sum);
- with ``[homomorphic_encryption]``, :class:`~hamrah.he.stage.HomomorphicSum` in the same place: clients
  encrypt, the sum is decrypted by the run's :class:`~hamrah.he.stage.KeyHolder` (central noise after
  decryption). The spec carries the public key only (``homomorphic["public_key"]``, base64), never the
  secret key, which stays in the key holder of the driver that aggregates.

:class:`PipelineRun` is what a driver (the simulator, the server) keeps across rounds: each client's
stage state (error feedback), the chain's server state, and the privacy accountant or budget ledger.
It lives here, below the drivers, because it needs both the codecs and the DP stages; it does no I/O
beyond the ledger file the caller names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hamrah.compression import HalfPrecision, RandomMask, SignEF, StochasticQuantizer, TopK
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.core.aggregate import CombineRule, Statistic
from hamrah.core.pipeline import (
    Chain, RoundOutput, ServerContext, Stage, check_statistics, process_round, wire_spec,
)
from hamrah.core.settings import variant_settings
from hamrah.he.stage import (
    HESettings, HomomorphicSum, KeyHolder, decode_public_key, default_max_weight, encode_public_key, he_settings,
)
from hamrah.privacy.accounting import PrivacyAccountant, RoundSpec, noise_multiplier_for, round_spec_for
from hamrah.privacy.config import AdaptiveClipConfig, DPConfig
from hamrah.privacy.distributed import distributed_accountant, distributed_stage
from hamrah.privacy.ledger import BudgetLedger
from hamrah.privacy.sensitivity import decode_error
from hamrah.privacy.server_state import server_state_from_dict, server_state_to_dict
from hamrah.privacy.stages import dp_stages
from hamrah.secagg.stage import SecureAggregation

# codec name -> the settings it takes (anything else in [compression] is refused by name)
CODECS: dict[str, tuple[str, ...]] = {
    "none": (), "quantize": ("bits", "scheme", "range", "bucket"), "sign": ("error_feedback",),
    "topk": ("fraction", "error_feedback", "value_dtype"), "mask": ("p", "shared"), "float16": (), "bfloat16": (),
}


def codec_stage(settings: Mapping[str, Any]) -> Stage | None:
    """Return the codec stage ``settings`` name (``{"codec": "quantize", "bits": 8}``), or None for "none".

    Raises:
        ConfigError: an unknown codec, a setting the codec does not take, or a bad value, named.
    """
    name, s = variant_settings(settings, "codec", "none", CODECS, "compression", "codec")
    try:
        return _build_codec(name, s)
    except ConfigError as err:
        raise ConfigError(f"compression: {err}") from None


def _build_codec(name: str, s: dict) -> Stage | None:
    if name == "quantize":
        return StochasticQuantizer(s.get("bits", 8), s.get("scheme", "minmax"), s.get("range"), s.get("bucket"))
    if name == "sign":
        return SignEF(s.get("error_feedback", True))
    if name == "topk":
        return TopK(s.get("fraction", 0.01), s.get("error_feedback", True), s.get("value_dtype", "float32"))
    if name == "mask":
        return RandomMask(s.get("p", 0.1), s.get("shared", False))
    if name in ("float16", "bfloat16"):
        return HalfPrecision(name)
    return None


def dp_config(settings: Mapping[str, Any] | None) -> DPConfig | None:
    """Return the DPConfig of plain ``settings`` (DPConfig's fields; ``adaptive`` a table or None)."""
    if settings is None:
        return None
    d = dict(settings)
    fields = {f.name for f in dataclasses.fields(DPConfig)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(f"privacy.{unknown[0]}: unknown setting; expected one of {', '.join(sorted(fields))}")
    if isinstance(d.get("adaptive"), Mapping):
        d["adaptive"] = AdaptiveClipConfig(**d["adaptive"])
    return DPConfig(**d)


_ADAPTIVE_KEYS = {"target_quantile": "target_quantile", "clip_learning_rate": "learning_rate",
                  "clip_count_stddev": "clip_count_stddev"}


def dp_settings(section: Mapping[str, Any]) -> dict:
    """Return DPConfig's settings from a flat ``[privacy]`` section (``adaptive = true`` plus
    ``target_quantile``, ``clip_learning_rate``, ``clip_count_stddev``)."""
    d = dict(section)
    adaptive = {new: d.pop(old) for old, new in _ADAPTIVE_KEYS.items() if old in d}
    d["adaptive"] = adaptive if d.get("adaptive") else None
    return d


@dataclass(frozen=True)
class PipelineSpec:
    """Everything needed to rebuild a run's chain on any side; JSON-ready (:meth:`to_dict`).

    Attributes:
        compression: ``{"codec": name, setting: value}``.
        privacy: DPConfig's fields as plain data, or None for no DP.
        noise_multiplier: z, resolved (configured, or calibrated to the target epsilon).
        population: K, the clients that may be sampled.
        cohort: m, clients per round (fixed-size sampling) or the expected q*K (Poisson).
        secure: ``SecureAggregation``'s settings (variant, clip, input_bits), or None: the server then
            sees only the sum of the updates (noise, if central, is added after unmasking).
        homomorphic: :class:`~hamrah.he.stage.HESettings` as plain data plus, once a key holder exists,
            ``"public_key"`` (base64); None for no encryption. Never a secret key.
    """

    compression: dict
    privacy: dict | None = None
    noise_multiplier: float = 0.0
    population: int = 1
    cohort: int = 1
    secure: dict | None = None
    homomorphic: dict | None = None

    @property
    def dp(self) -> DPConfig | None:
        return dp_config(self.privacy)

    @property
    def equal_weights(self) -> bool:
        """Return True when clients are weighted 1 each (DP's sensitivity bound), not by n_k."""
        return self.privacy is not None

    @property
    def poisson_q(self) -> float | None:
        """Return q when the accounting assumes Poisson sampling (the driver must sample so), else None."""
        dp = self.dp
        return self.cohort / self.population if dp is not None and dp.mode in ("central", "distributed") and \
            dp.sampling == "poisson" else None

    @property
    def tree_rounds(self) -> int | None:
        """Return k when DP-FTRL's accounting assumes each client at most once per tree of k rounds, else None."""
        dp = self.dp
        return dp.tree_rounds if dp is not None and dp.mode == "ftrl" else None

    @property
    def claims_sampling(self) -> bool:
        """Return True when the epsilon rests on how clients are sampled (central DP-FedAvg and distributed
        DP: Poisson or fixed-size draws), which a driver that takes whoever checks in cannot prove."""
        dp = self.dp
        return dp is not None and dp.mode in ("central", "distributed")

    def cohort_of(self, round_idx: int, population: int, rng_for_tree) -> np.ndarray | None:
        """Return round ``round_idx``'s cohort under DP-FTRL: the tree's rounds take disjoint slices of
        one permutation of the population (each client at most once per tree); None without DP-FTRL.

        Args:
            round_idx: 1-based round. population: K.
            rng_for_tree: tree index -> a numpy Generator (the same for every round of that tree).
        """
        k = self.tree_rounds
        if k is None:
            return None
        tree, pos = divmod(round_idx - 1, k)
        perm = rng_for_tree(tree).permutation(population)
        return np.sort(perm[pos * self.cohort:(pos + 1) * self.cohort])

    def he_settings(self) -> HESettings | None:
        """Return the homomorphic encryption settings (without the public key), or None."""
        if self.homomorphic is None:
            return None
        try:
            return HESettings(**{k: v for k, v in self.homomorphic.items() if k != "public_key"})
        except TypeError as err:
            raise ConfigError(f"pipeline spec: homomorphic settings {sorted(self.homomorphic)}: expected the fields "
                              f"of HESettings ({err})") from None

    def public_key(self) -> bytes | None:
        """Return the key holder's public key bytes the spec carries, or None."""
        text = (self.homomorphic or {}).get("public_key")
        return None if text is None else decode_public_key(text)

    def with_public_key(self, data: bytes) -> PipelineSpec:
        """Return this spec carrying the public key ``data`` (what devices encrypt under)."""
        return dataclasses.replace(self, homomorphic={**self.he_settings().to_dict(),
                                                      "public_key": encode_public_key(data)})

    def stages(self, key_holder: KeyHolder | None = None) -> list[Stage]:
        """Return the chain's stages (see the module docstring for the order); ``key_holder`` goes to the
        homomorphic stage on the side that decrypts sums."""
        codec = codec_stage(self.compression)
        dp = self.dp
        if dp is not None and dp.mode == "distributed":  # DDG noise on the clients, summed under SecAgg
            return [distributed_stage(dp, self.noise_multiplier, self.cohort, self.secure, codec)]
        codecs = [codec] if codec is not None else []
        secure = [SecureAggregation(**self.secure)] if self.secure is not None else []
        if self.homomorphic is not None:
            secure.append(HomomorphicSum(self.he_settings(), self.public_key(), key_holder))
        err = 0.0  # under a secure sum the client bounds its own contribution (hamrah.privacy.sensitivity)
        if dp is not None and dp.mode in ("central", "ftrl") and secure and all(c.traits.summable_in_ring for c in codecs):
            err = decode_error([*codecs, *secure])
        privacy = dp_stages(dp, self.noise_multiplier, float(self.cohort), err) if dp is not None else []
        if dp is not None and dp.mode in ("central", "ftrl"):
            return [privacy[0], *codecs, *secure, privacy[1]]
        return privacy + codecs + secure

    def chain(self, key_holder: KeyHolder | None = None) -> Chain:
        """Return the checked chain (ConfigError with the reason if it cannot work)."""
        stages = self.stages(key_holder)
        if self.homomorphic is not None:
            _check_homomorphic(self, stages)
        return Chain(stages)

    def round_spec(self) -> RoundSpec | None:
        """Return the mechanism charged per round, or None without DP."""
        dp = self.dp
        return None if dp is None or dp.mode == "distributed" else round_spec_for(
            dp, self.noise_multiplier, self.population, self.cohort)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineSpec:
        """Return the spec :meth:`to_dict` wrote (checked by building its chain).

        Raises:
            ConfigError: a field is missing or wrong, or the chain cannot work.
        """
        try:
            spec = cls(dict(d["compression"]), None if d.get("privacy") is None else dict(d["privacy"]),
                       float(d["noise_multiplier"]), int(d["population"]), int(d["cohort"]),
                       None if d.get("secure") is None else dict(d["secure"]),
                       None if d.get("homomorphic") is None else dict(d["homomorphic"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"pipeline spec: missing or malformed field ({err!r})") from None
        spec.chain()
        return spec


def resolve_pipeline(compression: Mapping[str, Any] | None, privacy: Mapping[str, Any] | None, population: int,
                     cohort: int, rounds: int, secure: Mapping[str, Any] | None = None,
                     homomorphic: Mapping[str, Any] | None = None) -> PipelineSpec | None:
    """Return the run's pipeline (None when no section is set), its chain checked and z resolved.

    Args:
        compression, privacy, secure, homomorphic: the config sections as plain data (None: absent);
            ``homomorphic``'s unset settings take defaults (:func:`~hamrah.he.stage.he_settings`).
        population: K. cohort: m per round (the expected cohort under Poisson sampling).
        rounds: planned rounds, to calibrate z to ``privacy.target_epsilon`` when z is not given.

    Raises:
        ConfigError: a bad setting, an impossible chain, or (on-device DP-SGD) a mode not wired into runs.
    """
    if compression is None and privacy is None and secure is None and homomorphic is None:
        return None
    dp = dp_config(privacy)
    z = 0.0
    if dp is not None:
        if dp.mode == "dpsgd":
            raise ConfigError("privacy.mode = \"dpsgd\": on-device DP-SGD changes local training and is not a "
                              "pipeline stage; expected \"central\" or \"local\" (see docs/dp.md for DP-SGD)")
        z = (dp.noise_multiplier or 0.0) if dp.mode == "distributed" else noise_multiplier_for(
            dp, rounds, round_spec_for(dp, 1.0, population, cohort))
        if dp.mode == "ftrl" and dp.tree_rounds * cohort > population:
            raise ConfigError(f"privacy.tree_rounds = {dp.tree_rounds} with {cohort} clients a round and {population} "
                              "in all: DP-FTRL's accounting needs each client at most once per tree, so expected "
                              f"tree_rounds <= {population // max(cohort, 1)} (population / cohort)")
    he = None
    if homomorphic is not None:
        he = he_settings(homomorphic, default_max_weight(privacy is not None, cohort)).to_dict()
    spec = PipelineSpec(dict(compression or {"codec": "none"}), None if privacy is None else dict(privacy),
                        float(z), int(population), int(cohort), None if secure is None else dict(secure), he)
    spec.chain()
    return spec


def _check_homomorphic(spec: PipelineSpec, stages: list[Stage]) -> None:
    """Refuse chains homomorphic encryption cannot serve, with the reason (before the generic chain rules)."""
    if spec.secure is not None:
        raise ConfigError("[homomorphic_encryption] with [secure_aggregation]: each already shows the server only "
                          "the sum of the updates, and the second would hide an already hidden update; expected "
                          "one of the two sections")
    for st in stages:
        if st.traits.kind == "codec" and not st.traits.summable_in_ring:
            raise ConfigError(f"compression.codec = {spec.compression.get('codec')!r} before [homomorphic_encryption]:"
                              " its payload (per-client indices, signs or scales) cannot be added under encryption;"
                              " expected codec = \"none\" or quantize with scheme = \"ring\" (a range shared by "
                              "all clients)")



class PipelineRun:
    """A driver's pipeline state across rounds: client states, server state, accountant or ledger.

    Args:
        spec: the pipeline.
        template: the model's parameters (names and shapes of an update).
        ledger_path: where the budget ledger is kept (a server's state folder), or None (in memory).
        key_holder: with ``[homomorphic_encryption]``, the key holder that decrypts sums (None: a fresh
            key pair from the OS CSPRNG); the run's spec then carries its public key.
    """

    def __init__(self, spec: PipelineSpec, template: Params, ledger_path: str | None = None,
                 key_holder: KeyHolder | None = None):
        if spec.homomorphic is not None:  # the driver that aggregates keeps the key holder; devices get the public key
            key_holder = key_holder or KeyHolder.generate(spec.he_settings())
            spec = spec.with_public_key(key_holder.public_bytes)
        self.key_holder = key_holder
        self.spec, self.chain, self.template = spec, spec.chain(key_holder), template
        self.client_states: dict[int, tuple] = {}
        self.server_state = self.chain.init_server(template)
        for st in self.chain.stages:  # refuse before round 1 a clip the secure sum's rounding could exceed
            if getattr(st, "decode_error", 0.0) > 0 and hasattr(st, "pre_clip"):
                st.pre_clip(st.clip, sum(v.numel() for v in template.values()))
        self.ledger_path = ledger_path
        dp, rs = spec.dp, spec.round_spec()
        self.delta = dp.delta if dp is not None else None
        self.ledger: BudgetLedger | None = None
        self.accountant: PrivacyAccountant | None = None
        if dp is not None and dp.target_epsilon is not None:
            self.ledger = (BudgetLedger.resume(ledger_path, dp.target_epsilon, dp.delta, rs, dp.accountant)
                           if ledger_path else BudgetLedger(dp.target_epsilon, dp.delta, rs, dp.accountant))
            self.accountant = self.ledger.accountant
        elif dp is not None:
            self.accountant = (distributed_accountant(self.chain.stages[0], template, spec.poisson_q)
                               if dp.mode == "distributed" else PrivacyAccountant(rs, dp.accountant))

    def refuse_start(self, rounds: int) -> None:
        """Raise ConfigError (naming the largest feasible number) unless ``rounds`` rounds fit the budget."""
        if self.ledger is not None:
            self.ledger.refuse_start(rounds)

    def check_round(self) -> None:
        """Raise BudgetExhausted if one more round would take epsilon past the target."""
        if self.ledger is not None:
            self.ledger.check_round()

    def record_round(self) -> float | None:
        """Charge one round to the accountant (and save the ledger); return epsilon so far, or None."""
        if self.accountant is None:
            return None
        self.accountant.step(1)
        if self.ledger is not None and self.ledger_path:
            self.ledger.save(self.ledger_path)
        return self.epsilon()

    def epsilon(self) -> float | None:
        """Return epsilon spent so far at the configured delta, or None without DP."""
        return None if self.accountant is None else self.accountant.epsilon(self.delta)

    def weight(self, num_examples: int) -> float:
        """Return the aggregation weight of a client with ``num_examples`` examples."""
        return 1.0 if self.spec.equal_weights else float(num_examples)

    def check(self, statistics: Sequence[Statistic], robust: bool = False) -> None:
        """Refuse (ConfigError with the reason) statistics or a robust aggregator this chain cannot carry
        soundly (:func:`hamrah.core.pipeline.check_statistics`)."""
        check_statistics(self.chain.stages, statistics, robust)

    def process(self, round_idx: int, updates: Mapping[int, Params], num_examples: Mapping[int, int],
                rngs: Mapping[int, np.random.Generator], server_rng: np.random.Generator,
                combine: CombineRule | None = None) -> RoundOutput:
        """Run the chain on one round (an empty round still releases central noise); keep the new states.

        ``updates`` are packed statistics (:func:`hamrah.core.aggregate.pack` with :meth:`weight`);
        ``combine`` is a robust rule that replaces the weighted mean of the decoded updates."""
        weights = {k: self.weight(num_examples[k]) for k in updates}
        out = process_round(self.chain, updates, weights, self.client_states, rngs, server_state=self.server_state,
                            round_idx=round_idx, server_rng=server_rng, template=self.template, combine=combine)
        self.client_states.update(out.states)
        self.server_state = out.server_state
        return out

    def wire_spec(self) -> tuple:
        """Return the names and shapes of a payload on the wire (model tensors plus auxiliary entries)."""
        return wire_spec(self.chain, self.template, self.server_state)

    def server_half(self, aggregate: Params, num_clients: int, round_idx: int, rng: np.random.Generator) -> Params:
        """Run the server halves on an aggregate computed elsewhere (the real server's Aggregators)."""
        out, self.server_state = self.chain.server(aggregate, self.server_state,
                                                   ServerContext(round_idx, num_clients, rng))
        return out


__all__ = ["CODECS", "PipelineRun", "PipelineSpec", "codec_stage", "dp_config", "dp_settings", "resolve_pipeline",
           "server_state_from_dict", "server_state_to_dict"]
