"""The device's half of secure aggregation over gRPC (the server's is :mod:`hamrah.server.secure`).

After training, a device whose plan's pipeline has a SecureAggregation stage opens one
SecureAggregation stream and walks JOIN, ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT and UNMASKING with
:class:`hamrah.secagg.SecAggClient` (keys from ``os.urandom``). Its input is its update weighted by
``n_k / W`` (1 under DP), run through the pipeline's client stages before the secure sum (clipping,
local noise, a codec), flattened in :func:`hamrah.secagg.wire_layout` order. The server never sees
the update itself, only the masked vector.

With ``malicious_server`` the device runs :class:`hamrah.secagg.ActiveSecAggClient`: it joins with a fresh
nonce and its CA-signed identity certificate, checks the server's roster against its own CA
(:func:`check_roster`: a server cannot add a device or substitute a key without the CA's key), binds
its signatures to the roster's hash, and walks the extra CONSISTENCY_CHECK stage. Any check that fails
aborts the device's part of the round before it reveals a share.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hamrah.core.errors import ConfigError, HamrahError, ProtocolError, TransportError
from hamrah.core.params import Params
from hamrah.core.pipeline import spec_of
from hamrah.device.pipeline import PLAN_KEY, encode_payload, plan_pipeline
from hamrah.pipeline.distributed import DistributedDiscreteGaussian, RingPayload
from hamrah.secagg import ACTIVE_STAGES, ActiveSecAggClient, SecAggClient, decode, wire_layout
from hamrah.secagg.roster import NONCE_BYTES, JoinIdentity, Roster, session_id
from hamrah.secagg.stage import SecureAggregation
from hamrah.transport.codec import chunks, join_chunks
from hamrah.transport.identity import IDENTITY_CERT, DeviceKey, verify_identity
from hamrah.transport.proto import fl_pb2 as pb

SECAGG_STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")
MAX_MESSAGE = 1 << 30
MAX_JOIN_WAIT_S = 86_400.0  # the longest a task's reporting deadline may hold a device in JOIN


def secure_stage(extra: dict) -> SecureAggregation | DistributedDiscreteGaussian | None:
    """Return the plan's secure-sum stage (SecAgg, or distributed DP's DDG), or None when its pipeline has none.

    Raises:
        ConfigError: the plan's pipeline is malformed.
    """
    if PLAN_KEY not in extra:
        return None
    chain = plan_pipeline(extra)[1]
    stage = None if chain.secure_sum is None else chain.stages[chain.secure_sum]
    return stage if isinstance(stage, (SecureAggregation, DistributedDiscreteGaussian)) else None


def secure_input(
    extra: dict, update: Params, weight: float, client_key: int, round_idx: int, states: dict
) -> np.ndarray:
    """Return this device's input to the secure sum: ``weight * update`` through the client stages, flattened
    (under distributed DP: the DDG stage's ring vector, clipped, rotated, rounded and noised on this device).

    Args:
        states: the runtime's pipeline state across tasks (updated in place), as for plain reports.
    """
    # names sorted (wire_layout's order): the DDG stage flattens in key order and only the server unflattens
    scaled = {k: update[k].to(torch.float32) * weight for k in sorted(update)}
    chain, payload = encode_payload(extra, scaled, client_key, round_idx, states)
    if isinstance(payload, RingPayload):  # distributed DP: clipped, rotated, rounded, noised ring elements
        return payload.values
    decoded = chain.wire_stage().decode(payload)
    layout = wire_layout(spec_of(decoded))
    return np.concatenate([decoded[n].detach().double().reshape(-1).numpy() for n in layout.names])


@dataclass(frozen=True)
class SecAggIdentity:
    """What a device needs for secure aggregation against a malicious server (``malicious_server``).

    Attributes:
        key: its Ed25519 signing key (``signing.key`` of its kit).
        certificate: its identity certificate, DER (``identity.pem``, beside the signing key).
        ca: the operator's CA it checks every other device's certificate against (``ca.pem``): the trust
            anchor, which came with the kit and not from the server.
    """

    key: DeviceKey
    certificate: bytes
    ca: x509.Certificate

    @staticmethod
    def load(signing_key: str | None, tls_ca: str | None) -> SecAggIdentity:
        """Read the identity from a provisioned kit's paths.

        Raises:
            ConfigError: no signing key or CA configured, or no identity certificate beside the key.
        """
        if not signing_key or not tls_ca:
            raise ConfigError(
                "this round runs secure aggregation against a malicious server: the device needs its "
                "signing key and the CA (signing_key, tls_ca: a kit from `hamrah provision`)"
            )
        path = Path(signing_key).parent / IDENTITY_CERT
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            ca = x509.load_pem_x509_certificate(Path(tls_ca).read_bytes())
        except OSError as e:
            raise ConfigError(
                f"{e.filename}: cannot read ({e.strerror}); re-run `hamrah provision` on the kit's "
                "folder to add identity.pem"
            ) from None
        except ValueError:
            raise ConfigError(f"{path} or {tls_ca}: not a PEM certificate") from None
        return SecAggIdentity(DeviceKey.load(signing_key), cert.public_bytes(serialization.Encoding.DER), ca)


def check_roster(
    roster: Roster, me: int, num_clients: int, join: JoinIdentity, ca: x509.Certificate, round_idx: int
) -> dict[int, bytes]:
    """Check the server's roster against this device's own JOIN and the CA; return ``id -> Ed25519 key``.

    Raises:
        AuthError: a certificate is not the CA's (the server made up a device or a key).
        ProtocolError: another round, a count that disagrees with n, this device's entry missing or not its
            own nonce and certificate, or one device or key listed twice.
    """
    if roster.round_id != round_idx or len(roster.entries) != num_clients:
        raise ProtocolError(
            f"secure aggregation: a roster of {len(roster.entries)} devices for round "
            f"{roster.round_id}, expected {num_clients} for round {round_idx}"
        )
    keys: dict[int, bytes] = {}
    names: set[str] = set()
    for e in roster.entries:
        name, public = verify_identity(e.certificate, ca)
        if name in names or public in keys.values():
            raise ProtocolError(f"secure aggregation: device {name} is listed twice in the roster")
        names.add(name)
        keys[e.client_id] = public
        if e.client_id == me and (e.nonce != join.nonce or e.certificate != join.certificate):
            raise ProtocolError("secure aggregation: the roster's entry for this device is not its own JOIN")
    if me not in keys:
        raise ProtocolError("secure aggregation: this device is not in the roster")
    return keys


class SecureSession:
    """One device's secure-aggregation stream for one task.

    ``drop_before``: a protocol stage name; the device vanishes (closes the stream) before sending that
    stage's message (simulated drop-out, for fleets and tests).

    ``timeout_s``: the longest the device waits for one reply of the server (JOIN's: at least until the
    task's reporting deadline, which the server holds JOIN open for); a stalled server is then left.
    """

    def __init__(self, call, task: pb.Task, drop_before: str | None = None, timeout_s: float = 120.0):
        self.call, self.task, self.drop_before, self.timeout_s = call, task, drop_before, timeout_s

    async def run(
        self,
        stage: SecureAggregation,
        update: Params,
        num_examples: int,
        metrics: dict,
        extra: dict,
        equal_weights: bool,
        client_key: int,
        states: dict,
        identity: SecAggIdentity | None = None,
    ) -> float | None:
        """Run the protocol; return the server's reconnect delay, or None if this device dropped out.

        Raises:
            ConfigError: ``malicious_server`` without ``identity``.
            AuthError, ProtocolError, DropoutThresholdExceeded: the device aborted (a forged roster or key, an
                inconsistent contributor set, too few signatures...): the stream is cancelled and nothing more
                is sent, in particular no share.
        """
        active = bool(getattr(stage, "malicious_server", False))
        if active and identity is None:
            raise ConfigError("secure_aggregation.malicious_server: this device has no identity (signing key, CA)")
        join_msg = JoinIdentity(os.urandom(NONCE_BYTES), identity.certificate) if active else None
        try:
            join, data = await self._send(
                pb.JOIN,
                join_msg.to_bytes() if active else b"",
                num_examples=num_examples,
                metrics=json.dumps(metrics).encode(),
            )
            scale = join.weight_scale
            if not equal_weights and not (math.isfinite(scale) and scale > 0):  # 0 raised ZeroDivisionError
                raise ProtocolError(f"secure aggregation: JOIN's weight_scale = {scale}; expected a positive number")
            # W is the largest *capped* count (server.max_example_weight): a device with more examples weighs 1
            weight = 1.0 if equal_weights else min(1.0, num_examples / scale)
            vector = secure_input(extra, update, weight, client_key, self.task.round, states)
            return await self._walk(stage, join, data, vector, join_msg, identity)
        except HamrahError:
            self.call.cancel()
            raise

    async def _walk(self, stage, join: pb.SecAggHeader, data: bytes, vector: np.ndarray, join_msg, identity):
        me, n = int(join.client_index), int(join.num_clients)
        if not 0 <= me < n:
            raise ProtocolError(
                f"secure aggregation: JOIN's client_index = {me}; expected 0..{n - 1} (num_clients = {n})"
            )
        config = stage.config(n, int(vector.size))
        if join_msg is None:
            client, stages = SecAggClient(me, config, round_id=self.task.round), SECAGG_STAGES
        else:
            roster = Roster.from_bytes(data)
            keys = check_roster(roster, me, n, join_msg, identity.ca, self.task.round)
            client = ActiveSecAggClient(
                me,
                config,
                signing_key=identity.key.private,
                verify_keys=keys,
                round_id=self.task.round,
                session=session_id(roster),
            )
            stages = ACTIVE_STAGES
        reply = None
        for name in stages:
            if name == self.drop_before:
                self.call.cancel()
                return None
            if name == "advertise_keys":
                message = client.advertise_keys()
            elif name == "masked_input":
                message = await asyncio.to_thread(client.masked_input, reply, vector)
            else:
                message = getattr(client, "unmask" if name == "unmasking" else name)(reply)
            header, data = await self._send(getattr(pb, name.upper()), message.to_bytes())
            reply = decode(data) if data else None
        await self.call.done_writing()
        return header.reconnect_after_s

    async def _send(self, stage: int, data: bytes, **fields) -> tuple[pb.SecAggHeader, bytes]:
        header = pb.SecAggHeader(
            task_id=self.task.task_id, round=self.task.round, stage=stage, message_bytes=len(data), **fields
        )
        await self.call.write(pb.SecAggPart(header=header))
        for piece in chunks(data) if data else ():
            await self.call.write(pb.SecAggPart(chunk=pb.Chunk(data=piece)))
        first = await self._read(stage)
        if not isinstance(first, pb.SecAggPart) or not first.HasField("header"):
            raise ProtocolError("secure aggregation: the server's reply did not start with a header")
        reply, parts, size = first.header, [], 0
        if reply.message_bytes > MAX_MESSAGE:  # refused before a chunk is read (2^62 was read while it came)
            raise ProtocolError(
                f"secure aggregation reply: announced {reply.message_bytes:,} bytes, over the limit of {MAX_MESSAGE:,}"
            )
        while size < reply.message_bytes:
            part = await self._read(stage)
            if not isinstance(part, pb.SecAggPart) or not part.HasField("chunk"):
                raise ProtocolError("secure aggregation: the server's reply ended early")
            parts.append(part.chunk.data)
            size += len(part.chunk.data)
        return reply, join_chunks(parts, reply.message_bytes, MAX_MESSAGE, what="secure aggregation reply")

    async def _read(self, stage: int):
        """Return the server's next message of ``stage``'s reply, waiting at most the session's timeout (JOIN:
        also until the task's reporting deadline); a stalled server held the device for good.

        Raises:
            TransportError: nothing came in time (the stream is cancelled).
        """
        wait, deadline = self.timeout_s, self.task.report_deadline_s
        if stage == pb.JOIN and math.isfinite(deadline):
            wait = max(wait, min(deadline, MAX_JOIN_WAIT_S))
        try:
            return await asyncio.wait_for(self.call.read(), wait)
        except asyncio.TimeoutError:
            self.call.cancel()
            raise TransportError(
                f"secure aggregation: no reply to {pb.SecAggStage.Name(stage)} from the server in {wait:g} s; "
                "expected one within the task's deadline"
            ) from None


__all__ = ["SecAggIdentity", "SecureSession", "check_roster", "secure_input", "secure_stage"]
