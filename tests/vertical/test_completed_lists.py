"""The completed epochs (or trees) a party announces before resuming are held to the run: at most
``epochs`` (``num_trees`` rounds of trees) entries, each in range. They were turned into a Python set
whatever their length, so one 1 GiB message cost a party about 10 GB (FTL's was bounded before)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.vertical.test_ftl import _Tamper
from tests.vertical.test_lr import SMALL_G, SMALL_H, roles

from hamrah.core.errors import ProtocolError
from hamrah.data.vertical import load_vertical
from hamrah.vertical import lr_coordinated, run_parties
from hamrah.vertical import secureboost as sb
from hamrah.vertical import splitnn as sn
from hamrah.vertical.lr_common import LRConfig
from hamrah.vertical.message import completed

HUGE = np.arange(1, 1 << 20, dtype=np.int64)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12), st.integers(1, 8))
def test_completed_takes_exactly_the_lists_a_run_can_hold(values, limit):
    value = np.array(values, dtype=np.int64)
    fits = len(values) <= limit and all(1 <= v <= limit for v in values)
    if fits:
        assert completed(value, "x", limit) == set(values)
    else:
        with pytest.raises(ProtocolError, match=rf"^x names {len(values)} epochs or trees, expected at most {limit}"):
            completed(value, "x", limit)


@pytest.mark.parametrize("bad", [HUGE, np.array([3], dtype=np.int64), np.array([0], dtype=np.int64)])
def test_a_vertical_lr_host_announcing_epochs_beyond_the_run_is_refused(bad):
    cfg = LRConfig(epochs=2, encrypted=False, psi=False)
    tamper = {"host": lambda c: _Tamper(c, "lr/hello", lambda m: {**m, "epochs": bad, "any": False})}
    with pytest.raises(ProtocolError, match=r"lr/hello from 'host': 'epochs' names \d+ epochs or trees"):
        run_parties(roles(lr_coordinated, SMALL_G, SMALL_H, cfg, wrap=tamper), timeout_s=30)


def test_a_secureboost_host_announcing_trees_beyond_the_run_is_refused():
    t = load_vertical("breast")
    g, h = t["guest"].select(t["guest"].ids[:120]), t["host"].select(t["guest"].ids[:120])
    cfg = sb.SecureBoostConfig(num_trees=2, max_depth=2, encrypted=False, psi=False)
    flood = lambda c: sb.host(_Tamper(c, "sbt.schema", lambda m: {**m, "trees": HUGE}), h)
    with pytest.raises(ProtocolError, match=r"sbt.schema from 'host': 'trees' names 1048575 epochs or trees"):
        run_parties({"guest": lambda c: sb.guest(c, g, cfg), "host": flood}, timeout_s=30)


def test_a_splitnn_host_announcing_epochs_beyond_the_run_is_refused():
    t = load_vertical("breast")
    g, h = t["guest"], t["host"].select(t["guest"].ids)
    cfg = sn.SplitNNConfig(epochs=2)
    flood = lambda c: sn.host(_Tamper(c, "splitnn/ready", lambda m: {**m, "done": HUGE}), h, cfg)
    with pytest.raises(ProtocolError, match=r"splitnn/ready from 'host': 'done' names 1048575 epochs or trees"):
        run_parties({"guest": lambda c: sn.guest(c, g, cfg, train_ids=g.ids[:400]), "host": flood}, timeout_s=30)
