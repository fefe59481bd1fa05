"""The server's secure round without a network: devices' messages fed straight to SecureRound."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import torch

from hamrah.core.errors import ProtocolError
from hamrah.secagg import SecAggClient, decode, wire_layout
from hamrah.secagg.stage import SecureAggregation
from hamrah.server.secure import DroppedFromRound, SecureRound, SecureRoundAborted
from hamrah.transport.proto import fl_pb2 as pb

SPEC = (("w", (2, 2)), ("b", (3,)))


def _round(n: int, timeout: float = 0.5) -> SecureRound:
    return SecureRound(
        SecureAggregation(clip=1.0, input_bits=16),
        wire_layout(SPEC),
        [f"t{u}" for u in range(n)],
        round_idx=7,
        equal_weights=False,
        stage_timeout_s=timeout,
    )


def _header(u: int, stage: int, **kw) -> pb.SecAggHeader:
    return pb.SecAggHeader(task_id=f"t{u}", round=7, stage=stage, **kw)


async def _device(rnd: SecureRound, u: int, x: np.ndarray, examples: int, stop_before: int | None = None):
    """Walk one device through the protocol; return the header of the last reply."""
    join, _ = await rnd.exchange(
        f"t{u}", _header(u, pb.JOIN, num_examples=examples, metrics=json.dumps({"train_loss": 1.0}).encode()), b""
    )
    w = examples / join.weight_scale
    client = SecAggClient(join.client_index, rnd.config, round_id=7)
    reply, head = None, join
    steps = (
        (pb.ADVERTISE_KEYS, lambda m: client.advertise_keys()),
        (pb.SHARE_KEYS, client.share_keys),
        (pb.MASKED_INPUT, lambda m: client.masked_input(m, w * x)),
        (pb.UNMASKING, client.unmask),
    )
    for stage, step in steps:
        if stage == stop_before:
            return None
        head, data = await rnd.exchange(f"t{u}", _header(u, stage), step(reply).to_bytes())
        reply = decode(data) if data else None
    return head


def _inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-0.5, 0.5, 7) for _ in range(n)]


async def _drive(rnd: SecureRound, xs, examples, stop_before=None):
    stop_before = stop_before or {}
    runner = asyncio.ensure_future(rnd.run(time.monotonic() + 5))
    devices = [_device(rnd, u, x, k, stop_before.get(u)) for u, (x, k) in enumerate(zip(xs, examples))]
    results = await asyncio.gather(*devices, return_exceptions=True)
    return await runner, results


def test_the_unmasked_mean_is_the_n_k_weighted_mean_over_the_contributors():
    xs, examples = _inputs(5), [10, 20, 30, 40, 50]
    rnd = _round(5)
    outcome, _ = asyncio.run(_drive(rnd, xs, examples, stop_before={4: pb.MASKED_INPUT}))
    want = sum(k * x for k, x in zip(examples[:4], xs[:4])) / sum(examples[:4])
    got = np.concatenate([outcome.mean[n].reshape(-1).numpy() for n in ("b", "w")])  # sorted layout: b, then w
    assert np.allclose(got, want, atol=1e-4)
    assert outcome.contributors == 4 and outcome.num_examples == 100
    assert outcome.survivors == {"join": 5, "advertise_keys": 5, "share_keys": 5, "masked_input": 4, "unmasking": 4}
    assert rnd.bytes_up > 0 and rnd.bytes_down > 0


def test_too_many_drop_outs_abort_the_round_and_tell_the_waiting_devices():
    rnd = _round(5)  # threshold t = 3
    outcome, results = asyncio.run(
        _drive(rnd, _inputs(5), [1] * 5, stop_before={0: pb.SHARE_KEYS, 1: pb.SHARE_KEYS, 2: pb.SHARE_KEYS})
    )
    assert outcome is None and "threshold is t=3" in rnd.failure
    assert all(isinstance(r, SecureRoundAborted) for r in results[3:])


def test_a_message_naming_another_client_is_refused():
    async def go():
        rnd = _round(3)
        runner = asyncio.ensure_future(rnd.run(time.monotonic() + 5))
        joins = [rnd.exchange(f"t{u}", _header(u, pb.JOIN, num_examples=5), b"") for u in range(3)]
        await asyncio.gather(*joins)
        forged = SecAggClient(1, rnd.config, round_id=7).advertise_keys().to_bytes()
        with pytest.raises(ProtocolError, match="naming client 1 from the device with id 0"):
            await rnd.exchange("t0", _header(0, pb.ADVERTISE_KEYS), forged)
        with pytest.raises(ProtocolError, match="second join"):
            await rnd.exchange("t1", _header(1, pb.JOIN, num_examples=5), b"")
        runner.cancel()

    asyncio.run(go())


def test_a_device_late_for_a_stage_is_told_it_was_dropped():
    async def go():
        rnd = _round(3, timeout=0.05)
        runner = asyncio.ensure_future(rnd.run(time.monotonic() + 0.1))
        await asyncio.gather(*(rnd.exchange(f"t{u}", _header(u, pb.JOIN, num_examples=5), b"") for u in range(2)))
        with pytest.raises(DroppedFromRound, match="join closed without this device"):
            await rnd.exchange("t2", _header(2, pb.JOIN, num_examples=5), b"")
        runner.cancel()

    asyncio.run(go())


def test_bad_join_values_are_refused():
    rnd = _round(3)
    with pytest.raises(ProtocolError, match="num_examples = 0"):
        asyncio.run(rnd.exchange("t0", _header(0, pb.JOIN, num_examples=0), b""))
    with pytest.raises(ProtocolError, match="unknown stage"):
        asyncio.run(rnd.exchange("t0", _header(0, 42), b""))


def test_wire_layout_sorts_names_and_ignores_the_spec_order():
    a = wire_layout((("w", (2, 2)), ("b", (3,))))
    assert a == wire_layout((("b", (3,)), ("w", (2, 2)))) and a.names == ("b", "w") and a.size == 7
    assert a.dtypes == (torch.float32, torch.float32)


def test_a_device_that_leaves_is_not_waited_for_at_later_stages():
    async def go():
        rnd = _round(3, timeout=30.0)  # a stage waiting for the leaver would outlast the test's 5 s budget
        runner = asyncio.ensure_future(rnd.run(time.monotonic() + 30))
        joins = [
            asyncio.ensure_future(rnd.exchange(f"t{u}", _header(u, pb.JOIN, num_examples=5), b"")) for u in range(3)
        ]
        while len(rnd.sent) < 3 and rnd.current == 0:
            await asyncio.sleep(0)
        rnd.leave("t2")  # joined, then hung up while waiting for the reply
        await asyncio.gather(*joins)
        assert rnd.current == 1 and rnd.expected == {0, 1}
        runner.cancel()

    asyncio.run(asyncio.wait_for(go(), 5))
