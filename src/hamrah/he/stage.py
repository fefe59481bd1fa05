"""Homomorphic encryption as the secure-sum stage of the client-update pipeline (:mod:`hamrah.core.pipeline`).

Clients encrypt their (flattened) update under the round's public key; whoever aggregates adds the
ciphertexts with the public key only; a separate :class:`KeyHolder`, the one object holding the secret
key, decrypts the aggregate and nothing else. Schemes: packed Paillier (Paillier 1999; packing as in
BatchCrypt, Zhang et al. 2020) or batched CKKS (Cheon et al. 2017), through :class:`~hamrah.he.HEScheme`.

Weighting: in the simulator :func:`~hamrah.core.pipeline.process_round` scales each client's update by
``p_k * m`` before the first stage (as for secure aggregation) and the chain divides the sum by m. The
real server knows each report's ``n_k`` and weights ciphertexts itself (:meth:`HomomorphicSum.weighted_sum`,
``c^{n_k}`` for Paillier, doubling-and-adding for CKKS), so devices encrypt their plain delta. Either way
each coordinate the stage encrypts is clipped to ``[-bound, bound]`` (as secure aggregation's ``clip``),
and the scheme's headroom is sized for a sum of total weight ``max_weight``.

Trust model (also in ``docs/he.md``): the key holder is a distinct object; the stage and the server's
aggregation code never read its key, only call :meth:`KeyHolder.decrypt`. In this system it lives in
the server process, so it protects individual updates from the aggregation code and from anyone who
sees the wire or the Aggregators' memory, not from someone who controls the server process itself.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch

from hamrah.core.errors import ConfigError, HamrahError, ProtocolError
from hamrah.core.numbers import check_int, check_number
from hamrah.core.params import Params
from hamrah.core.pipeline import (
    BaseStage,
    ClientContext,
    ServerContext,
    Spec,
    StageTraits,
    WireReader,
    WireWriter,
    header_nbytes,
    spec_of,
)
from hamrah.core.settings import variant_settings
from hamrah.he.ckks import CKKSConfig
from hamrah.he.layout import ParamsLayout
from hamrah.he.scheme import CKKSScheme, HEKeys, HEScheme, PaillierConfig, PaillierScheme

SCHEMES = ("paillier", "ckks")
# scheme -> the settings it takes (anything else in [homomorphic_encryption] is refused by name)
SCHEME_SETTINGS = {
    "paillier": ("key_bits", "precision_bits", "bound", "max_weight"),
    "ckks": ("poly_modulus_degree", "scale_bits", "bound", "max_weight"),
}
_TAGS = {"paillier": b"HEPA", "ckks": b"HECK"}
_WEIGHTED_MAX = 2**20  # default max_weight when the server weights by n_k: sums of up to ~1M examples


def coeff_bits(poly_modulus_degree: int) -> tuple[int, int]:
    """Return the CKKS modulus for aggregation: one data prime and SEAL's special prime (60, 60 from N = 8192)."""
    return (60, 60) if poly_modulus_degree >= 8192 else (54, 54)


@dataclass(frozen=True)
class HESettings:
    """A resolved ``[homomorphic_encryption]`` section: everything both sides need except the keys.

    Attributes:
        scheme: "paillier" or "ckks".
        key_bits, precision_bits: Paillier modulus bits and fixed-point fraction bits.
        poly_modulus_degree, scale_bits: CKKS ring degree N and scale 2^scale_bits.
        bound: each encrypted coordinate is clipped to [-bound, bound].
        max_weight: the largest total weight one encrypted sum may hold (the number of clients when each
            weighs 1; the sum of n_k when the server weights by examples); sizes the headroom.
    """

    scheme: str = "paillier"
    key_bits: int = 2048
    precision_bits: int = 24
    poly_modulus_degree: int = 8192
    scale_bits: int = 40
    bound: float = 1.0
    max_weight: int = 100

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"homomorphic_encryption.scheme = {self.scheme!r}: expected one of {', '.join(SCHEMES)}")
        check_number("homomorphic_encryption.bound", self.bound, 0.0, open_low=True)
        check_int("homomorphic_encryption.max_weight", self.max_weight, 1)
        try:
            self.build()
        except ConfigError as err:
            raise ConfigError(f"homomorphic_encryption ({self.scheme}): {err}") from None

    def build(self) -> HEScheme:
        """Return the scheme these settings describe (ConfigError when they cannot work)."""
        if self.scheme == "paillier":
            if (
                isinstance(self.key_bits, bool)
                or not isinstance(self.key_bits, int)
                or self.key_bits < 512
                or self.key_bits % 2
            ):
                raise ConfigError(
                    f"key_bits = {self.key_bits!r}: expected an even integer >= 512 (2048 or more for real use)"
                )
            return PaillierScheme(
                PaillierConfig(self.key_bits, self.precision_bits, float(self.bound), self.max_weight)
            )
        return CKKSScheme(
            CKKSConfig(
                self.poly_modulus_degree,
                coeff_bits(self.poly_modulus_degree),
                self.scale_bits,
                float(self.bound),
                self.max_weight,
            )
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def he_settings(section: Mapping[str, Any], max_weight: int) -> HESettings:
    """Return the settings of a ``[homomorphic_encryption]`` section (None values: the scheme's defaults).

    Args:
        section: the section as plain data (``scheme`` plus the settings of :data:`SCHEME_SETTINGS`).
        max_weight: the default headroom when the section does not set ``max_weight``.

    Raises:
        ConfigError: an unknown scheme, a setting the scheme does not take, or values that cannot work.
    """
    scheme, s = variant_settings(section, "scheme", "paillier", SCHEME_SETTINGS, "homomorphic_encryption", "scheme")
    s.setdefault("max_weight", int(max_weight))
    if scheme == "ckks" and "scale_bits" not in s:  # the most precise scale that leaves room for the sum
        room = coeff_bits(s.get("poly_modulus_degree", 8192))[0] - 2
        need = math.ceil(math.log2(max(float(s.get("bound", 1.0)) * s["max_weight"], 1.0)))
        s["scale_bits"] = max(20, min(40, room - need))
    return HESettings(scheme, **s)


def default_max_weight(equal_weights: bool, cohort: int) -> int:
    """Return the default headroom: ``2m + 16`` clients when each weighs 1 (room for Poisson cohorts above
    the expected m), else :data:`_WEIGHTED_MAX` examples (the real server weights by ``n_k``)."""
    return 2 * int(cohort) + 16 if equal_weights else _WEIGHTED_MAX


class KeyHolder:
    """The one holder of the secret key: hands out the public key and decrypts aggregates.

    Nothing else in the system reads the secret: stages and the server's aggregation code get the public
    key bytes and call :meth:`decrypt`. The key holder trusts its caller to pass only sums (the
    ciphertext's ``count`` is not authenticated, see ``docs/he.md``).

    Example:
        >>> holder = KeyHolder.generate(HESettings(key_bits=1024, max_weight=4))
        >>> len(holder.public_bytes) > 0
        True
    """

    def __init__(self, settings: HESettings, keys: HEKeys):
        self.settings, self.scheme = settings, settings.build()
        self._keys = keys
        self.public_bytes = self.scheme.public_to_bytes(keys.public)
        self.decryptions = 0

    @classmethod
    def generate(cls, settings: HESettings, rng: np.random.Generator | None = None) -> KeyHolder:
        """Return a key holder with a fresh key pair (``rng=None``: the OS CSPRNG; a Generator: test keys)."""
        scheme = settings.build()
        return cls(settings, scheme.keygen(rng))

    def decrypt(self, aggregate: Any) -> np.ndarray:
        """Return the float64 sum that an aggregate ciphertext holds."""
        self.decryptions += 1
        return self.scheme.decrypt_sum(self._keys.secret, aggregate)


@dataclass(frozen=True)
class HEPayload:
    """One client's encrypted update: the hamrah wire header (names, shapes) and the scheme's ciphertext bytes.

    On the client ``vector`` holds the (clipped, flattened) plaintext and ``plain`` the same as tensors,
    encryption happens on first use of :attr:`ciphertext` (so finding the wire spec costs nothing); a
    payload read from bytes holds only the ciphertext.
    """

    spec: Spec
    scheme: HEScheme = field(repr=False)
    public: Any = field(repr=False)
    vector: np.ndarray | None = field(default=None, repr=False)
    plain: Params | None = field(default=None, repr=False)
    parsed: Any = field(default=None, repr=False)

    @cached_property
    def ciphertext(self) -> Any:
        """Return the ciphertext (encrypting now, with the OS CSPRNG, if this is the client's payload)."""
        return self.parsed if self.parsed is not None else self.scheme.encrypt(self.public, self.vector)

    @cached_property
    def _bytes(self) -> bytes:
        w = WireWriter(_TAGS[self.scheme.name], self.spec)
        w.raw(self.scheme.ciphertext_to_bytes(self.ciphertext))
        return w.getvalue()

    @property
    def nbytes(self) -> int:
        return len(self._bytes)

    def to_bytes(self) -> bytes:
        return self._bytes


@dataclass(frozen=True)
class HomomorphicSum(BaseStage):
    """The secure-sum stage under homomorphic encryption: encrypt on the client, add without the secret key.

    Attributes:
        settings: the scheme and its parameters.
        public_key: the round's public key bytes (``KeyHolder.public_bytes``); None only while a config is
            checked, before the key holder exists.
        key_holder: the key holder, on the side that aggregates (simulator, server); never on a device.
    """

    settings: HESettings = HESettings()
    public_key: bytes | None = field(default=None, repr=False)
    key_holder: KeyHolder | None = field(default=None, repr=False, compare=False)
    name: str = "he_sum"
    traits: ClassVar[StageTraits] = StageTraits("secure_sum")

    @cached_property
    def scheme(self) -> HEScheme:
        return self.settings.build()

    @cached_property
    def public(self) -> Any:
        """Return the parsed public key (ConfigError when this stage was built without one)."""
        if self.public_key is None:
            raise ConfigError(
                f"{self.name}: no public key; expected the pipeline spec to carry the key holder's "
                "public key (the server or the simulator generates it)"
            )
        return self.scheme.public_from_bytes(self.public_key)

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[HEPayload, Any]:
        b = float(self.settings.bound)
        layout = ParamsLayout.of(update)
        vector = np.clip(layout.flatten(update), -b, b)  # in float64: a float32 bound could round above b
        plain = {k: v.to(torch.float32) for k, v in layout.unflatten(vector).items()}
        return HEPayload(spec_of(plain), self.scheme, self.public, vector, plain), state

    def decode(self, payload: HEPayload) -> Params:
        if payload.plain is None:
            raise ProtocolError(
                f"{self.name}: one client's ciphertext cannot be decoded without the secret key; "
                "expected the server to add ciphertexts and the key holder to decrypt the sum"
            )
        return payload.plain

    def read(self, data: bytes, spec: Spec) -> HEPayload:
        """Parse one client's payload, checking it is a fresh ciphertext of the expected size.

        Raises:
            ProtocolError: a wrong header, malformed or wrong-size ciphertext, another key, or a sum of several.
        """
        WireReader(data, _TAGS[self.scheme.name], spec)  # validates magic, tag, names and shapes
        body = bytes(data)[header_nbytes(tuple(spec)) :]
        length = sum(math.prod(s) for _, s in spec)
        expected = (
            f"a {self.scheme.name} ciphertext of {length} values in "
            f"{self.scheme.num_ciphertexts(length)} ciphertexts under this round's public key"
        )
        try:
            c = self.scheme.ciphertext_from_bytes(self.public, body)
        except HamrahError as err:
            raise ProtocolError(f"{self.name}: malformed ciphertext ({err}); expected {expected}") from None
        if c.length != length or c.count != 1:
            raise ProtocolError(
                f"{self.name}: ciphertext of {c.length} values summing {c.count} clients; "
                f"expected {expected}, from one client"
            )
        return HEPayload(tuple(spec), self.scheme, self.public, parsed=c)

    def weighted_sum(self, payloads: Sequence[HEPayload], weights: Sequence[int]) -> Any:
        """Return the encryption of ``sum_k w_k x_k`` (integer weights), computed with the public key only.

        Raises:
            ConfigError: the total weight exceeds ``settings.max_weight``. ProtocolError: no payload.
        """
        total = sum(int(w) for w in weights)
        if total > self.settings.max_weight:
            raise ConfigError(
                f"{self.name}: a sum of total weight {total} exceeds homomorphic_encryption.max_weight"
                f" = {self.settings.max_weight}, the headroom the scheme was sized for"
            )
        return self.scheme.sum([self.scheme.scale(p.ciphertext, int(w)) for p, w in zip(payloads, weights)])

    def decrypt(self, aggregate: Any, spec: Spec) -> Params:
        """Return the named float64 tensors of an aggregate, decrypted by the key holder (float64: a float32
        sum of total weight W would add up to W * bound * 2^-24 to the encoding's error).

        Raises:
            ProtocolError: the sum decrypts to values no sum of that total weight within ``bound`` holds
                (a report beyond the bound, crafted, or under another key), naming the first and the limit.
        """
        if self.key_holder is None:
            raise ConfigError(f"{self.name}: no key holder on this side; only the aggregating side decrypts sums")
        layout = ParamsLayout.of_spec(spec)
        layout = dataclasses.replace(layout, dtypes=tuple(torch.float64 for _ in layout.names))
        try:
            values = self.key_holder.decrypt(aggregate)
        except ProtocolError as err:
            what = f"{self.name}: the decrypted sum (total weight {aggregate.count}) is refused"
            raise ProtocolError(f"{what}: {err}") from None
        return layout.unflatten(values)

    def aggregate(self, payloads: Sequence[HEPayload], ctx: ServerContext) -> Params:
        return self.secure_round(payloads, ctx)[0]

    def secure_round(self, payloads: Sequence[HEPayload], ctx: ServerContext) -> tuple[Params, list[int], list[int]]:
        """Return the decrypted sum, each client's uploaded bytes and its download of the public key."""
        total = self.weighted_sum(payloads, [1] * len(payloads))
        key_bytes = len(self.public_key or b"")
        summed = {k: v.to(torch.float32) for k, v in self.decrypt(total, payloads[0].spec).items()}
        return summed, [p.nbytes for p in payloads], [key_bytes] * len(payloads)


def encode_public_key(data: bytes) -> str:
    """Return public key bytes as the base64 text a JSON plan carries."""
    return base64.b64encode(data).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """Return the public key bytes of :func:`encode_public_key`'s text.

    Raises:
        ConfigError: the text is not base64.
    """
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError) as err:
        raise ConfigError(f"homomorphic_encryption.public_key: expected base64 text ({err})") from None


__all__ = [
    "SCHEMES",
    "SCHEME_SETTINGS",
    "HEPayload",
    "HESettings",
    "HomomorphicSum",
    "KeyHolder",
    "coeff_bits",
    "decode_public_key",
    "default_max_weight",
    "encode_public_key",
    "he_settings",
]
