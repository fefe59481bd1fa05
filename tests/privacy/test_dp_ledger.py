"""The budget ledger: refuses the round that would exceed the budget, survives a restart, rejects corrupt files."""

from __future__ import annotations

import json

import pytest

from hamrah.core.errors import BudgetExhausted, ConfigError, DataError
from hamrah.privacy import BudgetLedger, PrivacyAccountant, RoundSpec

DELTA = 1e-5
SPEC = RoundSpec.poisson(1.0, 0.05)


def _run_until_refused(ledger: BudgetLedger, limit: int = 10_000) -> BudgetExhausted:
    for _ in range(limit):
        try:
            ledger.check_round()
        except BudgetExhausted as err:
            return err
        ledger.record_round()
    raise AssertionError("the ledger never refused a round")


def test_refuses_exactly_the_round_that_would_exceed():
    ledger = BudgetLedger(1.5, DELTA, SPEC)
    err = _run_until_refused(ledger)
    n = PrivacyAccountant(SPEC).rounds_possible(1.5, DELTA)
    assert ledger.rounds_done == n
    assert ledger.spent() <= 1.5 < PrivacyAccountant(SPEC).epsilon(DELTA, n + 1)
    msg = str(err)
    assert f"round {n + 1}" in msg and "target 1.5" in msg and f"in {n} rounds" in msg
    assert f"spent {ledger.spent():.4g}" in msg


def test_refuse_start_names_feasible_rounds_and_needed_noise():
    ledger = BudgetLedger(2.5, DELTA, SPEC)
    ledger.refuse_start(2)  # fits: no error
    n = PrivacyAccountant(SPEC).rounds_possible(2.5, DELTA)
    with pytest.raises(ConfigError) as info:
        ledger.refuse_start(500)
    msg = str(info.value)
    assert f"at most {n} rounds" in msg
    z = float(msg.split("noise_multiplier >= ")[1].split()[0])
    assert PrivacyAccountant(SPEC.with_noise(z)).epsilon(DELTA, 500) <= 2.5


def test_save_load_keeps_the_spent_budget(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = BudgetLedger(3.0, DELTA, SPEC)
    for _ in range(7):
        ledger.record_round()
    ledger.record_round(RoundSpec.poisson(1.0, 0.1))
    ledger.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]  # no temporary file left behind
    again = BudgetLedger.resume(path, 3.0, DELTA, SPEC)
    assert again.rounds_done == 8
    assert again.spent() == pytest.approx(ledger.spent())
    assert again.accountant.history == ledger.accountant.history
    assert json.loads(path.read_text())["spent_epsilon"] == pytest.approx(ledger.spent())


def test_resume_without_file_starts_fresh_and_refuses_another_budget(tmp_path):
    path = tmp_path / "ledger.json"
    assert BudgetLedger.resume(path, 3.0, DELTA, SPEC).rounds_done == 0
    BudgetLedger(3.0, DELTA, SPEC).save(path)
    with pytest.raises(ConfigError, match="saved budget"):
        BudgetLedger.resume(path, 5.0, DELTA, SPEC)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"format": "other"}', "format/version"),
    ],
)
def test_corrupt_file_is_a_data_error(tmp_path, content, match):
    path = tmp_path / "ledger.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        BudgetLedger.load(path)


def test_tampered_history_is_detected(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = BudgetLedger(3.0, DELTA, SPEC)
    ledger.record_round()
    ledger.record_round()
    ledger.save(path)
    data = json.loads(path.read_text())
    data["history"][0]["rounds"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="stored spent epsilon"):
        BudgetLedger.load(path)
    data["history"][0]["spec"]["noise_multiplier"] = -3
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="corrupt privacy ledger"):
        BudgetLedger.load(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        BudgetLedger.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "eps, delta, match", [(0, 1e-5, "target_epsilon"), (1.0, 1.0, "delta"), (float("inf"), 1e-5, "target_epsilon")]
)
def test_bad_budget_is_a_config_error(eps, delta, match):
    with pytest.raises(ConfigError, match=match):
        BudgetLedger(eps, delta, SPEC)


def test_save_into_a_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot write"):
        BudgetLedger(1.0, DELTA, SPEC).save(tmp_path / "no" / "ledger.json")
