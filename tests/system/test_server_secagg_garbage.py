"""A hostile device with a valid token sends garbage share ciphertexts at SHARE_KEYS over gRPC. Before, every
honest device failed to open them and aborted at MASKED_INPUT, so in a small federation where every device
is in every round, every round failed. Now each honest device rejects the hostile sender, the server leaves
it out, and the round commits the honest devices' exact secure sum; the server's log names the device."""

from __future__ import annotations

import asyncio
import os

from tests.system.harness import make_setup, run_system
from tests.system.secagg_hostile import Liar, one_round_with
from tests.system.test_server_secagg import DEVICES, _experiment

from hamrah.core.params import max_abs_diff
from hamrah.secagg.messages import ShareKeys


def _garbage(stage, message):
    if stage != "share_keys":
        return message
    return ShareKeys(
        message.round_id, message.client_id, tuple((v, os.urandom(len(ct))) for v, ct in message.ciphertexts)
    )


def test_a_device_sending_garbage_shares_is_left_out_and_named_and_the_round_commits(tmp_path, caplog):
    secure_cfg = {"variant": "secagg", "clip": 0.5, "input_bits": 20}
    honest = DEVICES - 1
    # the plain mean of the honest devices' updates: the same five devices, all selected, no hostile one
    plain_setup, stores, tokens = make_setup(
        tmp_path / "plain", _experiment(None, rounds=1), devices=honest, goal_count=honest, over_selection=1.0
    )
    plain, _, _ = asyncio.run(run_system(plain_setup, tmp_path / "plain" / "state", stores, tokens))

    liar = Liar(num_examples=1, tamper=_garbage)
    with caplog.at_level("WARNING", logger="hamrah.server"):
        secure, summary, rec = one_round_with(tmp_path, _experiment(secure_cfg, rounds=1), liar, honest)
    assert summary["rounds_committed"] == 1 and rec["attempts"] == 1
    assert rec["reported"] == honest and rec["secagg_left_out"] == 1
    assert rec["secagg_survivors"]["masked_input"] == DEVICES  # its masked input arrived, and was left out
    # its masked input is answered with no unmask request: it is never asked for a share
    assert [(stage, "went on without this device" in why) for stage, _, why in liar.seen] == [("masked_input", True)]
    assert max_abs_diff(secure.coordinator.params, plain.coordinator.params) < 1e-4
    lines = [r.getMessage() for r in caplog.records]
    named = [m for m in lines if "left out of the sum for rejected shares: hostile" in m]
    assert len(named) == 1 and f"(accused by {honest})" in named[0]
    assert sum("could not open the shares sent by hostile" in m for m in lines) == honest
