"""Cross-silo mode: its config refusals and the round machine with every site in every round."""

from __future__ import annotations

import pytest
from tests.server.test_round_machine import Driver

from hamrah.core.errors import ConfigError
from hamrah.server import events as ev
from hamrah.server.config import server_config, site_count
from hamrah.server.machine import REPORTING, SELECTING, MachineConfig, RoundMachine

SILO = {"mode": "cross_silo", "sites": 3}


def test_cross_silo_config_asks_every_site_and_all_reports():
    cfg = server_config(SILO)
    assert cfg.cross_silo and cfg.selection_target(3) == 3 and cfg.reports_needed(3) == 3
    m = MachineConfig.of(cfg, 3)
    assert (m.goal, m.target, m.reports_needed, m.selection_window_s, m.no_show_rounds, m.eval_target) == (
        3,
        3,
        0,  # 0: every site still in the run
        0.0,
        0,
        0,
    )
    assert MachineConfig.of(server_config({**SILO, "min_reports": 2}), 3).reports_needed == 2
    device = server_config({})
    assert not device.cross_silo and device.selection_target(10) == 13 and device.reports_needed(10) == 8


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("goal_count", 3, "the goal is every site"),
        ("over_selection", 1.5, "no one to over-select"),
        ("min_selected_fraction", 0.5, "selection waits for every site"),
        ("selection_window_s", 0.5, "no first-come window"),
        ("eval_devices", 2, "federated evaluation is site_eval_fraction"),
        ("no_show_rounds", 1, "asked again in the next one"),
    ],
)
def test_cross_silo_refuses_cross_device_settings_with_the_reason(key, value, reason):
    with pytest.raises(
        ConfigError, match=rf'server.{key} with server.mode = "cross_silo": .*{reason}.*; expected it unset'
    ):
        server_config({**SILO, key: value})


@pytest.mark.parametrize(
    "table, match",
    [
        ({"mode": "federated"}, r"server.mode = 'federated': expected one of cross_device, cross_silo"),
        ({"sites": 3}, r'server.sites: only with server.mode = "cross_silo"'),
        ({"site_eval_fraction": 0.2}, r'server.site_eval_fraction: only with server.mode = "cross_silo"'),
        ({**SILO, "sites": 0}, r"server.sites = 0: expected an integer >= 1"),
        ({**SILO, "site_eval_fraction": 1.0}, r"expected a fraction in \[0, 1\)"),
        ({**SILO, "min_reports": 4}, r"server.min_reports = 4: expected at most server.sites \(3\)"),
    ],
)
def test_mode_settings_refused_at_config_time(table, match):
    with pytest.raises(ConfigError, match=match):
        server_config(table)


def test_site_count_from_sites_or_tokens_else_refused():
    assert site_count(server_config(SILO), None) == 3
    assert site_count(server_config({"mode": "cross_silo"}), 5) == 5
    with pytest.raises(
        ConfigError, match=r"needs the number of sites: expected server.sites = N or a server.tokens_file"
    ):
        site_count(server_config({"mode": "cross_silo"}), None)
    with pytest.raises(ConfigError, match=r"the tokens file lists only 2 devices; expected a token per site"):
        site_count(server_config(SILO), 2)


def silo(**kw) -> Driver:
    base = dict(goal=3, target=3, reports_needed=0, min_selected=0, selection_window_s=0.0, no_show_rounds=0)
    return Driver(cross_silo=True, **{**base, **kw})


def test_every_site_is_selected_every_round_without_waiting_for_a_window():
    d = silo()
    for r in (1, 2, 3):
        d.check_in("a", "b", "c")
        d.tick(0.0)  # the draw happens at once (window 0)
        tasks = d.assigned(r)
        assert sorted(tasks) == ["a", "b", "c"] and all(t.kind == "train" for t in tasks.values())
        for i, t in enumerate(tasks.values(), 1):
            d.report(t, i)
    assert d.committed == [1, 2, 3] and d.m.finished


def test_a_site_failing_its_task_is_out_and_the_round_goes_on_without_it():
    d = silo()
    d.check_in("a", "b", "c")
    d.tick(0.0)
    t = d.assigned(1)
    d.report(t["a"], 1)
    d.report(t["b"], 2)
    outs = d.feed(ev.DeviceAborted("c", t["c"].task_id, 1, failed=True, reason="store does not match"))
    assert ev.SiteOut("c", "store does not match", 2) in outs
    assert d.committed == [1]  # two of three sites reported: the round commits, not retried
    assert d.m.out == {"c": "store does not match"}
    d.check_in("a", "b", "c")
    d.tick(0.0)
    assert sorted(d.assigned(2)) == ["a", "b"] and d.m.current.goal == 2  # c is never asked again
    assert not d.of(ev.RoundAbandoned)


def test_a_site_out_at_check_in_shrinks_the_round_in_selection():
    d = silo()
    d.check_in("a", "b")
    d.tick(0.0)
    assert d.m.phase == SELECTING  # waiting for the third site
    outs = d.feed(ev.SiteFailed("c", "no examples"))
    assert any(isinstance(o, ev.SelectionClosed) for o in outs) and d.m.phase == REPORTING
    t = d.assigned(1)
    d.report(t["a"], 1)
    d.report(t["b"], 2)
    assert d.committed == [1]


def test_too_few_sites_left_fails_the_run_at_once_with_the_reason():
    d = silo(reports_needed=3)  # server.min_reports = 3: every site
    d.check_in("a", "b", "c")
    d.tick(0.0)
    t = d.assigned(1)
    outs = d.feed(ev.DeviceAborted("b", t["b"].task_id, 1, failed=True, reason="wrong schema"))
    failed = [o for o in outs if isinstance(o, ev.RunFailed)]
    assert failed and "2 of 3 sites remain, 3 needed" in failed[0].message and d.m.finished
    assert not d.of(ev.RoundAbandoned)  # not retried


def test_an_aborted_task_is_not_a_failure_the_site_stays_in():
    d = silo(max_round_attempts=5)
    d.check_in("a", "b", "c")
    d.tick(0.0)
    t = d.assigned(1)
    d.report(t["a"], 1)
    d.report(t["b"], 2)
    d.feed(ev.DeviceAborted("c", t["c"].task_id, 1, failed=False, reason="eligibility lost"))
    assert d.m.out == {} and d.of(ev.RoundAbandoned)  # every site needed: retried


def test_max_round_attempts_caps_a_site_that_never_checks_in():
    d = silo(max_round_attempts=2, selection_timeout_s=5.0, retry_delay_s=1.0)
    for _ in range(2):
        d.check_in("a", "b")  # site c is down (not failed: it may come back)
        d.tick(0.0)
        d.tick(5.0)  # selection times out with 2 of 3 sites
        d.tick(1.0)  # retry delay
    abandoned = d.of(ev.RoundAbandoned)
    failed = d.of(ev.RunFailed)
    assert [a.attempt for a in abandoned] == [1, 2] and "2 devices selected, 3 needed" in abandoned[0].message
    assert failed and "abandoned 2 times (server.max_round_attempts = 2)" in failed[0].message
    assert d.m.finished and d.committed == []


def test_machine_config_cross_device_unchanged():
    m = RoundMachine(MachineConfig(goal=4, target=6, reports_needed=3, min_selected=3), ev.FakeClock())
    assert m.needed() == 3 and m.min_selected() == 3


def test_server_setup_resolves_sites_and_refuses_a_target_without_a_test_set(tmp_path):
    from tests.system.harness import experiment

    from hamrah.device.fleet import make_tokens
    from hamrah.experiments.serve import server_setup

    make_tokens(tmp_path / "tokens.txt", 4)
    srv = server_config({"mode": "cross_silo", "test_set": False, "tokens_file": str(tmp_path / "tokens.txt")})
    setup = server_setup(experiment(rounds=1), srv)
    assert setup.goal == 4 and setup.test_data is None  # the tokens file's four sites
    with pytest.raises(ConfigError, match=r"run.stop_at_target with server.test_set = false: .* expected"):
        server_setup(experiment(rounds=1, target_accuracy=0.9, stop_at_target=True), srv)
    with pytest.raises(ConfigError, match=r"needs the number of sites"):
        server_setup(experiment(rounds=1), server_config({"mode": "cross_silo"}))


def test_final_evaluation_round_scores_the_final_model_then_ends():
    d = silo(rounds=1, final_eval=True)
    d.check_in("a", "b", "c")
    d.tick(0.0)
    for i, t in enumerate(d.assigned(1).values(), 1):
        d.report(t, i)
    assert d.committed == [1] and not d.m.finished and d.m.evaluating
    d.check_in("a", "b", "c")
    d.tick(0.0)
    evals = [o for o in d.of(ev.TaskAssigned) if o.kind == "evaluate"]
    assert sorted(t.device for t in evals) == ["a", "b", "c"] and {t.round for t in evals} == {1}
    scores = [(10, {"loss": 1.0, "accuracy": 0.5}), (30, {"loss": 0.5, "accuracy": 0.9})]
    d.m.current.evals.extend(scores)  # what the shell keeps of each evaluate report
    d.report(evals[0], 0)
    d.report(evals[1], 0)
    assert not d.of(ev.SitesEvaluated)  # waits for the third site
    d.feed(ev.DeviceAborted(evals[2].device, evals[2].task_id, 1, failed=True, reason="gone"))
    (done,) = d.of(ev.SitesEvaluated)
    assert done.round == 1 and list(done.evals) == scores
    assert d.m.finished and d.committed == [1] and d.of(ev.End)[0].reason == "rounds"


def test_without_final_eval_the_run_ends_at_the_last_commit():
    d = silo(rounds=1)
    d.check_in("a", "b", "c")
    d.tick(0.0)
    for i, t in enumerate(d.assigned(1).values(), 1):
        d.report(t, i)
    assert d.m.finished and not d.of(ev.SitesEvaluated)
    assert MachineConfig.of(server_config({**SILO, "site_eval_fraction": 0.2}), 3).final_eval


def test_hamrah_device_takes_its_log_name_from_name_or_device_id():
    from hamrah.cli import build_parser

    base = ["device", "--server", "127.0.0.1:1", "--store", "s.db"]
    assert build_parser().parse_args([*base, "--name", "hospital-a"]).device_id == "hospital-a"
    assert build_parser().parse_args([*base, "--device-id", "bank-b"]).device_id == "bank-b"


def test_a_site_taken_out_rejoins_from_the_next_round():
    d = silo()
    d.check_in("a", "b", "c")
    d.tick(0.0)
    t = d.assigned(1)
    d.report(t["a"], 1)
    d.report(t["b"], 2)
    d.feed(ev.DeviceAborted("c", t["c"].task_id, 1, failed=True, reason="store does not match"))
    assert d.committed == [1] and "c" in d.m.out
    d.check_in("a", "b")
    d.tick(0.0)
    assert sorted(d.assigned(2)) == ["a", "b"]  # round 2 is drawn without c
    assert d.feed(ev.SiteRejoined("c")) == [ev.SiteBack("c", 3)] and d.m.out == {}
    assert d.m.current.goal == 2  # the round in flight keeps its goal
    for i, task in enumerate(d.assigned(2).values(), 1):
        d.report(task, i)
    d.check_in("a", "b", "c")
    d.tick(0.0)
    assert sorted(d.assigned(3)) == ["a", "b", "c"] and d.m.current.goal == 3  # c is back
    assert d.feed(ev.SiteRejoined("a")) == []  # a site in the run: nothing to do


def test_a_new_process_of_a_site_rejoins_and_an_older_one_is_superseded(tmp_path):
    from tests.server.driver import make_coordinator
    from tests.system.harness import FAST

    coord = make_coordinator(tmp_path, rounds=2, base={**FAST, **SILO, "test_set": False})
    coord.named("k2", "site-2", "s1")
    coord.site_failed("k2", "store does not match")
    coord.named("k2", "site-2", "s1")  # the same process checks in again: still out
    assert coord.site_out("k2") == "store does not match" and not coord.devices.superseded("k2", "s1")
    coord.named("k2", "site-2", "s2")  # restarted
    assert (
        coord.site_out("k2") is None
        and coord.devices.superseded("k2", "s1")
        and not coord.devices.superseded("k2", "s2")
    )
    coord.named("k2", "site-2", "s1")  # the old process again: it stays superseded, the site stays in
    assert coord.site_out("k2") is None and coord.devices.superseded("k2", "s1")
    coord.named("k3", "site-3", "")  # a runtime that sends no session: never rejoins, never superseded
    assert not coord.devices.superseded("k3", "")
    coord.store.close()


def test_a_site_slow_past_the_reporting_deadline_is_asked_again_in_the_retry():
    """Cross-silo has no sitting out (``no_show_rounds`` 0): a site that missed round 1's reporting deadline
    is drawn when round 1 is retried, and the run goes on. Before, it sat out every retry of round 1, which
    needs every site: the run failed after ``max_round_attempts``."""
    d = silo(max_round_attempts=3, reporting_timeout_s=5.0, retry_delay_s=1.0)
    d.check_in("a", "b", "c")
    d.tick(0.0)
    t = d.assigned(1)
    d.report(t["a"], 1)
    d.report(t["b"], 2)
    d.tick(5.0)  # site c is slow: the round is abandoned in reporting
    assert [a.phase for a in d.of(ev.RoundAbandoned)] == ["reporting"] and d.m.no_show == {}
    d.tick(1.0)
    d.check_in("a", "b", "c")
    d.tick(0.0)
    retry = [o for o in d.of(ev.TaskAssigned)][3:]
    assert sorted(o.device for o in retry) == ["a", "b", "c"]
    for i, o in enumerate(retry, 1):
        d.report(o, i)
    assert d.committed == [1] and not d.of(ev.RunFailed)


def test_no_show_rounds_zero_never_sits_a_device_out():
    d = Driver(
        goal=2,
        target=2,
        reports_needed=2,
        min_selected=2,
        selection_window_s=0.0,
        no_show_rounds=0,
        reporting_timeout_s=5.0,
        retry_delay_s=1.0,
    )
    d.check_in("a", "b")
    d.tick(0.0)
    d.report(d.assigned(1)["a"], 1)
    d.tick(5.0)  # b never answers
    d.tick(1.0)
    d.check_in("a", "b")
    d.tick(0.0)
    assert sorted(o.device for o in d.of(ev.TaskAssigned)[2:]) == ["a", "b"]


def test_a_site_failing_with_a_megabyte_reason_is_out_with_a_short_one(tmp_path):
    """The reason a FAILED report carries is kept as the site's out reason, logged and sent back at every
    check-in: a site could make it megabytes long (a 4 MB header), each check-in answer over the gRPC limit."""
    import asyncio

    from tests.server.driver import make_coordinator, open_round, select
    from tests.system.harness import FAST

    from hamrah.transport.proto import fl_pb2 as pb

    coord = make_coordinator(tmp_path, base={**FAST, **SILO, "test_set": False})

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        tasks = await select(coord, ["k1", "k2", "k3"])
        t = tasks["k2"]
        failed = pb.ReportHeader(task_id=t.task_id, round=t.round, status=pb.FAILED, reason="x" * 3_000_000)
        assert coord.report("k2", failed, b"") == "failed"
        runner.cancel()

    asyncio.run(go())
    assert len(coord.site_out("k2")) <= 300
    coord.store.close()
