"""A Coordinator driven by a fake clock reproduces a recorded gRPC run.

A real server and real devices run two rounds over loopback with the round machine's journal on
(every event with its clock time and the machine's outputs). The journal is then replayed, without
sockets or asyncio, into a fresh Coordinator on a :class:`FakeClock` that reads each event's recorded
time: every output (draws, task kinds, closures, commits) must be the one recorded, and the run
must end with the same cohorts, the same committed model and the same round records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import torch
from tests.system.harness import device_config, experiment, make_setup, records

from hamrah.device.fleet import Churn, run_fleet
from hamrah.server import events as ev
from hamrah.server.app import FLServer
from hamrah.server.coordinator import Coordinator
from hamrah.server.state import ServerStore

TIMINGS_OF_THE_COMMIT = {"aggregation_s", "eval_s", "commit_s", "round_s", "elapsed_s"}  # run in a thread
# report norms are float32 reductions (privacy.mechanisms.l2_norm) whose summation order torch picks per
# call (threads, memory alignment of the decoded payload): equal to float32 precision, not bit for bit
# (seen: 2.243071824269178 vs 2.2430718242691783); the model itself is summed in float64 and is bit-identical
FLOAT32_NORMS = {"update_norm_median", "clip_norm"}


async def _recorded_run(setup, state_dir, stores, tokens):
    server = FLServer(setup, state_dir)
    server.coordinator.machine.journal = []  # record from the first event on
    port = await server.start(0)
    base = device_config(port, population=setup.server.population)
    fleet = asyncio.ensure_future(run_fleet(base, stores, tokens, Churn(unplug=0.2, away_s=0.2, seed=4)))
    await asyncio.wait_for(server.serve(linger_s=0.5), 240)
    await asyncio.wait_for(fleet, 10)
    return server


def _same(recorded, replayed) -> bool:
    """Equal events/outputs: floats within 1e-9 s (a replayed header arrival is t - upload_s), the
    report envelope and the commit's record (its timings come from a worker thread) left aside."""
    if type(recorded) is not type(replayed):
        return False
    if isinstance(recorded, ev.Committed):
        return recorded.round == replayed.round
    for f in dataclasses.fields(recorded):
        a, b = getattr(recorded, f.name), getattr(replayed, f.name)
        if f.name == "report":
            continue
        if isinstance(a, float) and isinstance(b, float):
            if not math.isclose(a, b, rel_tol=0, abs_tol=1e-9):
                return False
        elif a != b:
            return False
    return True


def _replay(journal, setup, state_dir) -> Coordinator:
    """Feed ``journal`` into a fresh Coordinator on a fake clock; check every step against it."""
    ids = iter([o.task_id for _, _, outs in journal for o in outs if isinstance(o, ev.TaskAssigned)])
    clock = ev.FakeClock(journal[0][0])
    store = ServerStore(state_dir, setup.config)
    coord = Coordinator(
        setup.server,
        setup.run,
        setup.algorithm,
        setup.algorithm_plan,
        setup.model,
        setup.test_data,
        store,
        setup.goal,
        setup.ignore_index,
        clock=clock,
        new_task_id=lambda: next(ids),
    )
    script = iter(journal)
    handle = coord.machine.handle
    coord.replayed = []  # every output of the replay, in order

    def checked(event):  # every event the Coordinator feeds, external or its own, must be the recorded one
        t, recorded, outs = next(script)
        assert _same(recorded, event), (recorded, event)
        clock.t = t
        replayed = handle(event)
        coord.replayed.extend(replayed)
        assert len(replayed) == len(outs) and all(map(_same, outs, replayed)), (outs, replayed)
        return replayed

    coord.machine.handle = checked
    coord._start()  # round 1's OpenRound, the journal's first entry
    for t, event, _ in journal[1:]:
        clock.t = t
        if isinstance(event, (ev.OpenRound, ev.Stop)):
            continue  # fed by the Coordinator itself (RoundDue, drain) while handling the entry before
        if isinstance(event, (ev.Committed, ev.CommitRefused)):
            due, coord._commit_due = coord._commit_due, None
            coord.committed(coord._commit_step(due))
        elif isinstance(event, ev.ReportArrived):
            if event.upload_s is not None:
                coord._upload_started[event.task_id] = t - event.upload_s  # the header's arrival (admit)
            coord.accept(event.device, event.report)
        elif isinstance(event, ev.Downloaded):
            coord.downloaded(event.task_id, event.device)  # the shell's entry: it also counts the bytes sent
        else:
            coord._feed(event)
    assert next(script, None) is None  # everything recorded was replayed
    store.close()
    return coord


def test_a_fake_clock_replay_reproduces_a_recorded_grpc_run(tmp_path):
    setup, stores, tokens = make_setup(
        tmp_path, experiment(rounds=2), devices=8, goal_count=4, over_selection=1.5, min_reports=4
    )
    server = asyncio.run(_recorded_run(setup, tmp_path / "state", stores, tokens))
    journal = server.coordinator.machine.journal
    kinds = {type(e).__name__ for _, e, _ in journal}
    assert {"CheckedIn", "TaskAsked", "Downloaded", "ReportArrived", "TimerFired", "Committed"} <= kinds

    replay = _replay(journal, setup, tmp_path / "replay")

    def cohorts(outputs):
        return sorted((o.round, o.device, o.kind) for o in outputs if isinstance(o, ev.TaskAssigned))

    assert cohorts(replay.replayed) == cohorts(o for _, _, outs in journal for o in outs)
    assert len({r for r, _, _ in cohorts(replay.replayed)}) == 2
    assert replay.last_round == server.coordinator.last_round == 2
    for name, value in server.coordinator.params.items():
        assert torch.equal(replay.params[name], value), name  # the same committed model, bit for bit
    recorded, replayed = records(tmp_path / "state", setup), records(tmp_path / "replay", setup)
    assert [r["round"] for r in recorded] == [1, 2]
    for a, b in zip(recorded, replayed, strict=True):
        assert set(a) == set(b)
        for key in set(a) - TIMINGS_OF_THE_COMMIT:
            if key.endswith("_s") and a[key] is not None:  # phase timings in ms: a rounding apart at most
                assert math.isclose(a[key], b[key], abs_tol=1e-3 + 1e-9), key
            elif key in FLOAT32_NORMS and a[key] is not None:
                assert math.isclose(a[key], b[key], rel_tol=1e-6), key
            else:
                assert a[key] == b[key], key
    assert all(r["download_s"] is not None and r["selection_s"] > 0 for r in recorded)
