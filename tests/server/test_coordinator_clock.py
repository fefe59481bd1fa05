"""The Coordinator itself (real store, model, algorithm, Aggregators) driven synchronously on a fake
clock: no sockets and no event loop. A round commits with its phase timings read off the fake
clock, and a new Coordinator on the same state folder resumes after it."""

from __future__ import annotations

import torch
from tests.server.driver import FAST_COORD, as_statistics
from tests.system.harness import experiment

from hamrah.core.params import max_abs_diff
from hamrah.server import events as ev
from hamrah.server.config import server_config
from hamrah.server.coordinator import Coordinator
from hamrah.server.state import ServerStore
from hamrah.transport.codec import encode_params


def _coordinator(tmp, clock: ev.FakeClock) -> Coordinator:
    from hamrah.experiments.serve import server_setup

    setup = server_setup(
        experiment(rounds=3),
        server_config(
            {
                **FAST_COORD,
                "goal_count": 3,
                "over_selection": 1.0,
                "min_reports": 3,
                "selection_window_s": 1.0,
                "reporting_timeout_s": 60.0,
            }
        ),
    )
    return Coordinator(
        setup.server,
        setup.run,
        setup.algorithm,
        setup.algorithm_plan,
        setup.model,
        setup.test_data,
        ServerStore(tmp, setup.config),
        setup.goal,
        setup.ignore_index,
        clock=clock,
    )


def _one_round(coord: Coordinator, clock: ev.FakeClock, scale: float) -> dict[str, ev.TaskAssigned]:
    outs = []
    for device in ("a", "b", "c", "d"):
        outs += coord._feed(ev.CheckedIn(device))
    clock.advance(1.0)  # the selection window
    outs += coord._feed(ev.TimerFired())
    tasks = {o.device: o for o in outs if isinstance(o, ev.TaskAssigned)}
    for device, task in tasks.items():
        coord._feed(ev.TaskAsked(device, task.task_id))
        clock.advance(0.5)
        coord.downloaded(task.task_id, device)
    delta = {k: torch.full_like(v, scale) for k, v in coord.params.items()}
    for device, task in tasks.items():
        clock.advance(2.0)
        coord._upload_started[task.task_id] = clock.now()
        clock.advance(0.25)
        coord.accept(
            device,
            ev.Report(
                task.task_id,
                task.round,
                ev.COMPLETED,
                10,
                {"train_loss": 0.5, "duration_s": 1.5},
                encode_params(as_statistics(delta)),
            ),
        )
    due, coord._commit_due = coord._commit_due, None
    coord.committed(coord._commit_step(due))
    return tasks


def test_a_round_commits_on_the_fake_clock_and_a_restart_resumes_after_it(tmp_path):
    clock = ev.FakeClock(50.0)
    coord = _coordinator(tmp_path, clock)
    before = {k: v.clone() for k, v in coord.params.items()}
    coord._start()
    tasks = _one_round(coord, clock, 1e-3)
    assert len(tasks) == 3 and coord.last_round == 1 and coord.current.round == 2
    assert max_abs_diff(coord.params, {k: v + 1e-3 for k, v in before.items()}) < 1e-6
    (rec,) = coord.store.committed_rounds()
    assert rec["selection_s"] == 1.0 and rec["download_s"] == (0.5 + 1.0 + 1.5) / 3 and rec["upload_s"] == 0.25
    assert rec["training_s"] == 1.5 and rec["reporting_s"] == 3 * 0.5 + 3 * 2.25
    assert rec["reported"] == 3 and rec["dropped"] == 0 and rec["clients"] == 3
    # bytes by Aggregator: the 3 tasks went round robin to Aggregators 0, 1, 0; each moved one
    # checkpoint down and one update up, and the round's totals are their sums
    ckpt, update = len(coord._ckpt), len(encode_params(as_statistics(dict(coord.params))))
    assert rec["bytes_by_aggregator"] == {"0": [2 * update, 2 * ckpt], "1": [update, ckpt]}
    assert (rec["bytes_up"], rec["bytes_down"]) == (3 * update, 3 * ckpt)
    params = {k: v.clone() for k, v in coord.params.items()}
    coord.store.close()

    again = _coordinator(tmp_path, ev.FakeClock(0.0))
    assert again.last_round == 1 and max_abs_diff(again.params, params) == 0
    again._start()
    assert again.current.round == 2 and again.current.attempt == 1
    again.store.close()


class _SpentBudget:
    """A pipeline whose privacy budget allows rounds up to ``last`` (FLServer attaches it after building
    the Coordinator, as here)."""

    buffered = False

    def __init__(self, last: int):
        self.last = last

    def refusal(self, round_idx: int) -> str | None:
        return None if round_idx <= self.last else f"round {round_idx} would pass the privacy budget"

    def start_round(self, round_idx: int) -> None:
        pass


def test_a_pipeline_attached_after_construction_still_stops_the_run_at_its_budget(tmp_path):
    clock = ev.FakeClock(0.0)
    coord = _coordinator(tmp_path, clock)
    coord.pipeline = _SpentBudget(last=0)
    coord._start()
    assert coord.machine.finished and coord.ended == ev.End("stopped", "the privacy budget allows no more rounds")
    assert coord.loop.ended is not None and coord.loop.ended.reason == "budget"
