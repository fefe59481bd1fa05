from hamrah.device.eligibility import DeviceState, HostState, ScriptedState


def test_blockers_name_each_failed_condition():
    assert DeviceState().eligible
    s = DeviceState(idle=True, charging=False, unmetered=False)
    assert not s.eligible and s.blockers() == ["not charging", "not on an unmetered network"]


def test_scripted_state_plays_its_script_then_holds_the_last_state():
    src = ScriptedState([(2, DeviceState()), (1, DeviceState(charging=False))])
    assert [src.read().charging for _ in range(5)] == [True, True, False, False, False]


def test_host_state_reads_this_machine():
    s = HostState(idle_cpu_percent=101.0).read()  # CPU use is always below 101%
    assert s.idle and s.unmetered and isinstance(s.charging, bool)
