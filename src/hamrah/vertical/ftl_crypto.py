"""How the two FTL parties swap terms and learn their own gradients: in the clear, or under Paillier with masks.

Each training step, each party holds a plaintext matrix ``W`` and vector ``w`` and needs ``W t + w``
where ``t`` is the *other* party's terms (:mod:`hamrah.vertical.ftl_math`). Both links run the same
four messages' worth of logic:

- :class:`PlainLink`: each party sends its terms in the clear and computes ``W t + w`` itself
  (the paper's non-secure baseline: each party sees the other's representations).
- :class:`PaillierLink` (Liu et al. 2020, section 5, "the secure protocol with masks"): each party
  encrypts its terms under its *own* public key (``ftl/terms``); the other computes ``[[W t + w]]``
  homomorphically, adds a random mask ``r`` and sends it back (``ftl/masked``); the key owner decrypts
  ``W t + w + r`` and returns it (``ftl/unmasked``); the party removes ``r``. A party learns its own
  parameter gradient and nothing else; the other party sees only masked sums.

Fixed point: terms, ``W`` and the optional left factor at ``2^precision_bits``, so results come back
at ``2^(2 precision_bits)`` (``2^(3 precision_bits)`` with a left factor). Masks are uniform below
``2^(scale + MASK_SLACK_BITS)``: at least 40 bits more than any value they hide (values stay below
``2^(scale + 48)``, checked after unmasking), so the masked result reveals at most ``2^-40``
statistically about the value.
"""

from __future__ import annotations

import secrets

import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he
from hamrah.vertical.channel import Channel
from hamrah.vertical.nets import check_array

MASK_SLACK_BITS = 88


def _check_step(msg: dict, step: int, what: str) -> dict:
    if msg.get("step") != step:
        raise ProtocolError(f"{what}: expected step {step}, got {msg.get('step')!r} (a replayed or reordered message)")
    return msg


class PlainLink:
    """Terms in the clear; each party computes its own ``W t + w``."""

    def __init__(self, channel: Channel, peer: str):
        self.channel, self.peer = channel, peer

    def swap(self, step: int, mine: np.ndarray, their_len: int) -> np.ndarray:
        """Send this party's terms, return the peer's (checked: ``their_len`` finite float64 values)."""
        self.channel.send(self.peer, "ftl/terms", {"step": step, "t": np.asarray(mine, dtype=np.float64)})
        msg = _check_step(self.channel.recv(self.peer, "ftl/terms"), step, f"ftl/terms from {self.peer!r}")
        return check_array(msg.get("t"), f"ftl/terms from {self.peer!r}", (their_len,), "float64")

    def apply(
        self,
        step: int,
        w_mat: np.ndarray,
        w_vec: np.ndarray,
        theirs: np.ndarray,
        peer_out_len: int,
        left: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return ``W t + w``, or ``left (W t + w)`` (the peer computes its own; nothing is sent)."""
        out = w_mat @ theirs + w_vec
        return out if left is None else left @ out


class PaillierLink:
    """Terms encrypted under their owner's key; results masked, decrypted by the other party, unmasked.

    Args:
        channel: this party's channel.
        peer: the other party.
        secret: this party's secret key (its public key encrypts this party's terms).
        peer_public: the other party's public key.
        precision_bits: fixed-point bits of terms and matrices.
    """

    def __init__(
        self, channel: Channel, peer: str, secret: he.SecretKey, peer_public: he.PublicKey, precision_bits: int
    ):
        self.channel, self.peer, self.secret, self.peer_public = channel, peer, secret, peer_public
        self.bits = precision_bits

    def swap(self, step: int, mine: np.ndarray, their_len: int) -> he.CipherVector:
        """Send ``[[mine]]`` under this party's key; return the peer's ``[[terms]]`` (count, key, range checked)."""
        enc = he.encrypt(self.secret.public, he.encode(mine, self.bits))
        self.channel.send(self.peer, "ftl/terms", {"step": step, **he.to_wire(enc)})
        msg = _check_step(self.channel.recv(self.peer, "ftl/terms"), step, f"ftl/terms from {self.peer!r}")
        return he.from_wire(self.peer_public, msg, their_len, f"ftl/terms from {self.peer!r}")

    def _ints(self, matrix: np.ndarray) -> np.ndarray:
        return np.array(he.encode(matrix.ravel(), self.bits), dtype=object).reshape(matrix.shape)

    def apply(
        self,
        step: int,
        w_mat: np.ndarray,
        w_vec: np.ndarray,
        theirs: he.CipherVector,
        peer_out_len: int,
        left: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return ``W t + w`` (or ``left (W t + w)``) computed under the peer's key, decrypted by the peer
        behind a mask.

        ``left`` (a party's Jacobian, transposed) is applied to the encrypted ``W t + w``: when ``W`` is
        sparse this costs far fewer exponentiations than the dense ``(left W) t``. Also decrypts the
        peer's masked result (``peer_out_len`` values) for it.

        Raises:
            ProtocolError: a message of the wrong size, key, step or range.
        """
        what = f"from {self.peer!r}"
        scale = 2 * self.bits if left is None else 3 * self.bits
        rows = len(w_vec) if left is None else left.shape[0]
        if rows:
            out = he.add_plain(
                he.matvec(self._ints(w_mat), theirs), [v << self.bits for v in he.encode(w_vec, self.bits)]
            )
            if left is not None:
                out = he.matvec(self._ints(left), out)
            masks = [secrets.randbits(scale + MASK_SLACK_BITS) for _ in range(rows)]
            out = he.add_plain(out, masks)
        else:
            out, masks = he.CipherVector(self.peer_public, ()), []
        self.channel.send(self.peer, "ftl/masked", {"step": step, **he.to_wire(out)})
        msg = _check_step(self.channel.recv(self.peer, "ftl/masked"), step, f"ftl/masked {what}")
        peer_masked = he.from_wire(self.secret.public, msg, peer_out_len, f"ftl/masked {what}")
        self.channel.send(
            self.peer, "ftl/unmasked", {"step": step, "v": tuple(he.decrypt(self.secret, peer_masked, signed=False))}
        )
        msg = _check_step(self.channel.recv(self.peer, "ftl/unmasked"), step, f"ftl/unmasked {what}")
        return he.decode(self._unmask(msg.get("v"), masks, what, scale), scale)

    def _unmask(self, values: object, masks: list[int], what: str, scale: int) -> list[int]:
        n = self.peer_public.n
        if not isinstance(values, tuple) or len(values) != len(masks) or not all(0 <= v < n for v in values):
            raise ProtocolError(f"ftl/unmasked {what}: expected {len(masks)} residues modulo the key's n")
        out = []
        for v, r in zip(values, masks):
            m = (v - r) % n
            m = m - n if m > n // 2 else m
            if abs(m) > 1 << (scale + 48):
                raise ProtocolError(f"ftl/unmasked {what}: a value is out of range (tampered or overflowed)")
            out.append(m)
        return out


__all__ = ["MASK_SLACK_BITS", "PaillierLink", "PlainLink"]
