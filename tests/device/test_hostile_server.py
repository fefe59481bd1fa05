"""A device against a server that lies (real gRPC on 127.0.0.1): each lie fails the task with a reason the
server is told, or is bounded; the device neither crashes, spins, sleeps for good nor trains on garbage."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from tests.device.hostile_server import HostileServer, make_store, plan_json, secagg_extra, serve_one_device, weights

from hamrah.device.downlink import MAX_WAIT_S, MIN_WAIT_S, pace
from hamrah.transport.codec import BROADCAST_PREFIX, CHUNK_BYTES, encode_params
from hamrah.transport.proto import fl_pb2 as pb


def _run(servicer, tmp_path, **cfg):
    with make_store(tmp_path / "store.db") as store:
        return asyncio.run(serve_one_device(servicer, store, **cfg))


def _failed_with(servicer, stats, match: str) -> None:
    assert (stats.finished, stats.failed, stats.reported) == (True, 1, 0)
    [header] = servicer.reports
    assert header.status == pb.FAILED and match in header.reason, header.reason


def test_a_checkpoint_stream_past_what_the_task_announced_is_cut_not_buffered(tmp_path):
    sent = []

    async def flood(_):  # 200 MiB after a task that announced the real checkpoint's 196 bytes
        for _ in range(200):
            sent.append(1)
            yield pb.Chunk(data=b"\0" * CHUNK_BYTES)

    servicer = HostileServer(stream=flood)
    stats = _run(servicer, tmp_path)
    _failed_with(servicer, stats, f"the stream exceeds the {servicer.announce} bytes the task announced")
    assert len(sent) < 50  # the device hung up at the first chunk (it read all 200 before refusing them)


def test_a_checkpoint_announced_over_the_limit_is_refused_before_it_is_read(tmp_path):
    servicer = HostileServer(announce=10**12)
    _failed_with(servicer, _run(servicer, tmp_path), "announced 1,000,000,000,000 bytes, over the limit")


W = weights()


@pytest.mark.parametrize(
    "tensors, reason",
    [
        ({"a": W["fc.weight"], "b": W["fc.bias"]}, "parameter names differ (missing ['fc.bias', 'fc.weight']"),
        ({"fc.weight": W["fc.weight"]}, "parameter names differ (missing ['fc.bias'], unexpected [])"),
        ({**W, "fc.weight": torch.zeros(3, 5)}, "fc.weight has shape (3, 5), expected (3, 4)"),
        ({k: v.double() for k, v in W.items()}, "fc.weight has dtype torch.float64, expected torch.float32"),
        ({**W, "fc.bias": torch.tensor([0.0, float("nan"), 0.0])}, "fc.bias holds NaN or infinite values"),
    ],
    ids=["names", "missing", "shape", "dtype", "nan"],
)
def test_a_checkpoint_that_does_not_fit_the_plans_model_fails_the_task(tmp_path, tensors, reason):
    # before: the device trained on it and reported COMPLETED (the names, the dtype, the NaN), or failed
    # with torch's own words (the shape)
    servicer = HostileServer(checkpoint=encode_params(tensors))
    _failed_with(servicer, _run(servicer, tmp_path), f"checkpoint: {reason}")


def test_a_plan_whose_model_dwarfs_its_checkpoint_is_refused_before_it_is_built(tmp_path):
    model = {"name": "logreg", "input_shape": [4], "num_classes": 10**12, "tokens": False, "hidden": 8}
    servicer = HostileServer(plan=plan_json(model=model))  # 16 TB of weights, were they allocated
    _failed_with(
        servicer, _run(servicer, tmp_path), "checkpoint: fc.weight has shape (3, 4), expected (1000000000000, 4)"
    )


@pytest.mark.parametrize("entry", [5, {"eval_fraction": "x"}, {"eval_fraction": 1.0}])
def test_a_malformed_cross_silo_entry_fails_the_task_not_the_device(tmp_path, entry):
    servicer = HostileServer(plan=plan_json(extra={"cross_silo": entry}))  # 5: AttributeError stopped the device
    _failed_with(servicer, _run(servicer, tmp_path), "plan: cross_silo")


@pytest.mark.parametrize("wait", [-5.0, float("nan"), float("inf"), 1e300])
def test_a_reconnect_delay_from_a_broken_server_is_bounded(tmp_path, wait):
    def reply(n):
        return pb.CheckInResponse(reconnect_after_s=wait) if n == 1 else pb.CheckInResponse(finished=True)

    servicer = HostileServer(check_in=reply)
    if wait == 1e300:  # an hour, not forever
        assert pace(wait, 0.3) == MAX_WAIT_S
        return
    stats = _run(servicer, tmp_path, limit_s=5.0)  # NaN and infinity slept for good
    assert stats.finished and servicer.check_ins == 2


def test_a_server_that_says_come_back_at_once_does_not_make_the_device_spin(tmp_path):
    servicer = HostileServer(check_in=lambda n: pb.CheckInResponse(reconnect_after_s=0.0))
    with pytest.raises(asyncio.TimeoutError):
        _run(servicer, tmp_path, limit_s=1.0)
    assert servicer.check_ins <= 1 / MIN_WAIT_S + 5  # it checked in thousands of times a second


def _join_reply(**header):
    async def server(parts):  # reads the device's JOIN, answers with ``header``, then waits
        await parts.__anext__()
        yield pb.SecAggPart(header=pb.SecAggHeader(stage=pb.JOIN, **header))
        await asyncio.sleep(30)

    return server


@pytest.mark.parametrize(
    "header, reason",
    [
        ({}, "no reply to JOIN from the server in 1 s"),  # never answered: it held the device for good
        (  # 2^62 bytes announced: it read what came until the stream ended
            {"message_bytes": 2**62, "num_clients": 3, "weight_scale": 10.0},
            "announced 4,611,686,018,427,387,904 bytes, over the limit of 1,073,741,824",
        ),
        ({"num_clients": 3, "weight_scale": 0.0}, "JOIN's weight_scale = 0.0; expected a positive number"),
        ({"num_clients": 3, "weight_scale": float("nan")}, "JOIN's weight_scale = nan"),  # 0: ZeroDivisionError
        (  # the round stalled until the timeout
            {"num_clients": 3, "client_index": 7, "weight_scale": 10.0},
            "JOIN's client_index = 7; expected 0..2 (num_clients = 3)",
        ),
    ],
    ids=["stalled", "oversized", "zero-scale", "nan-scale", "index"],
)
def test_a_secure_aggregation_server_that_stalls_or_lies_fails_the_task(tmp_path, header, reason):
    if header:
        server = _join_reply(**header)
    else:

        async def server(parts):
            await parts.__anext__()
            await asyncio.sleep(30)
            yield pb.SecAggPart()

    servicer = HostileServer(plan=plan_json(extra=secagg_extra()), secure=server)
    _failed_with(servicer, _run(servicer, tmp_path, call_timeout_s=1.0, limit_s=10.0), reason)


SCAFFOLD = {"name": "scaffold", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 5, "lr": 0.1}


def test_a_broadcast_not_shaped_like_the_model_fails_the_task(tmp_path):
    tensors = {**W, BROADCAST_PREFIX + "zz": torch.zeros(3)}  # SCAFFOLD's c under a name of no parameter
    servicer = HostileServer(plan=plan_json(algorithm=SCAFFOLD), checkpoint=encode_params(tensors))
    # before: KeyError 'fc.weight' stopped the device
    _failed_with(servicer, _run(servicer, tmp_path), "checkpoint's broadcast: parameter names differ")


@pytest.mark.parametrize(
    "kept",
    [
        {"x": torch.zeros(3)},  # another model's: KeyError stopped the device
        {"fc.weight": torch.zeros(3, 4)},  # a part: KeyError too
        {k: torch.zeros(7) for k in W},  # other shapes: every task failed with torch's words
        {k: torch.full_like(v, float("nan")) for k, v in W.items()},  # NaN: trained into a NaN update
    ],
    ids=["names", "subset", "shapes", "nan"],
)
def test_a_kept_client_state_that_does_not_fit_the_model_is_started_afresh(tmp_path, kept):
    servicer = HostileServer(plan=plan_json(algorithm=SCAFFOLD))
    with make_store(tmp_path / "store.db") as store:
        store.save_client_state(kept)
        stats = asyncio.run(serve_one_device(servicer, store))
        state = store.client_state()
    assert stats.reported == 1 and [h.status for h in servicer.reports] == [pb.COMPLETED]
    assert set(state) == set(W) and all(torch.isfinite(v).all() for v in state.values())  # c_i of this model


def test_an_unexpected_error_in_a_task_fails_the_task_and_the_device_goes_on(tmp_path, monkeypatch):
    def broken(*args):
        raise KeyError("fc.weight")

    monkeypatch.setattr("hamrah.device.compute.TaskJob.run", broken)
    servicer = HostileServer()
    _failed_with(servicer, _run(servicer, tmp_path), "KeyError: 'fc.weight'")


def test_a_task_still_training_at_its_report_deadline_is_aborted_and_its_training_stops(tmp_path):
    # 10^7 epochs: before, the device trained on (for hours, also once no longer idle) and reported late
    algorithm = {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 10**7, "batch_size": 5, "lr": 0.1}
    servicer = HostileServer(plan=plan_json(algorithm=algorithm), deadline_s=0.5)
    out: list = []
    run = threading.Thread(target=lambda: out.append(_run(servicer, tmp_path)), daemon=True)
    run.start()
    run.join(120)  # asyncio.run returns once the training thread has ended
    assert not run.is_alive(), "the training thread kept running after the task was aborted"
    [header] = servicer.reports
    assert header.status == pb.ABORTED and "still training at the report deadline (0.5 s" in header.reason
    assert out[0].aborted == 1


def test_a_device_whose_training_diverges_fails_its_task_instead_of_sending_nan(tmp_path):
    huge = {k: torch.full_like(v, 3e38) for k, v in W.items()}  # finite, so the checkpoint passes its check
    servicer = HostileServer(checkpoint=encode_params(huge))
    _failed_with(servicer, _run(servicer, tmp_path), "local training diverged: update fc.")
