"""A hostile device for secure-aggregation rounds over the real server: it holds a valid token, checks in,
takes a training task and walks JOIN, ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT and UNMASKING over gRPC
with a real :class:`hamrah.secagg.SecAggClient`, but lies where a test says (its claimed example count,
its input, or any message it sends). It reads the round's SecAgg settings from the in-process server,
which a real hostile device would compute from its plan the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
from tests.system.harness import make_setup, records, run_system

from hamrah.device.secure import SecureSession
from hamrah.secagg import SecAggClient, decode
from hamrah.transport.identity import token_metadata
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc

STATE = pb.DeviceState(idle=True, charging=True, unmetered=True)
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")


@dataclass
class Liar:
    """How the hostile device lies: ``num_examples`` at JOIN, the value of every input entry, and
    ``tamper(stage, message) -> message`` on each protocol message before it is sent."""

    num_examples: int = 100
    value: float = 0.0
    tamper: Callable = lambda stage, message: message
    seen: list = field(default_factory=list)  # (stage, grpc code, details) of refused calls
    rounds: list = field(default_factory=list)  # rounds it took part in to the end


async def hostile_device(server, port: int, token: str, liar: Liar, population: str, rounds: int = 1) -> None:
    """Check in until ``rounds`` secure rounds were walked (or training ends), lying as ``liar`` says."""
    coord = server.coordinator
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.FederatedLearningStub(channel)
        md = token_metadata(token)
        while not coord.finished and len(liar.rounds) < rounds:
            try:
                reply = await stub.CheckIn(
                    pb.CheckInRequest(population=population, device_id="hostile", state=STATE), metadata=md
                )
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
                continue
            if not reply.HasField("task") or reply.task.kind != pb.TRAIN:
                await asyncio.sleep(min(reply.reconnect_after_s or 0.1, 0.2))
                continue
            await _walk(stub, md, coord, reply.task, liar)


def one_round_with(tmp_path, experiment, liar: Liar, honest: int, **server):
    """Serve one round of ``experiment`` to ``honest`` real devices and one hostile device (a spare token
    of the tokens file) lying as ``liar`` says; every device is selected. Return (server, summary, the
    round's record)."""
    setup, stores, tokens = make_setup(
        tmp_path, experiment, devices=honest, goal_count=honest + 1, over_selection=1.0, **server
    )
    spare = (tmp_path / "tokens.txt").read_text().split()[honest + 3]

    async def attack(srv, port):
        await hostile_device(srv, port, spare, liar, setup.server.population)

    srv, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens, during=attack))
    (record,) = records(tmp_path / "state", setup)
    return srv, summary, record


async def _walk(stub, md, coord, task: pb.Task, liar: Liar) -> None:
    call = stub.SecureAggregation(metadata=md)
    session = SecureSession(call, task)
    stage = "join"
    try:
        join, _ = await session._send(pb.JOIN, b"", num_examples=liar.num_examples, metrics=b'{"train_loss": 1.0}')
        config = coord.current.secure.config
        client = SecAggClient(int(join.client_index), config, round_id=task.round)
        x = np.full(config.vector_length, liar.value)
        reply = None
        for stage in STAGES:
            if stage == "advertise_keys":
                message = client.advertise_keys()
            elif stage == "masked_input":
                message = client.masked_input(reply, x)
            else:
                message = getattr(client, "unmask" if stage == "unmasking" else stage)(reply)
            message = liar.tamper(stage, message)
            _, data = await session._send(getattr(pb, stage.upper()), message.to_bytes())
            reply = decode(data) if data else None
        await call.done_writing()
        liar.rounds.append(task.round)
    except grpc.aio.AioRpcError as e:
        liar.seen.append((stage, e.code(), e.details()))
