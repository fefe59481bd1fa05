"""The rank-Gauss transform of vertical LR: scikit-learn's quantile-normal map, monotone, reproducible
from its table, and the transform that brings vertical LR within 0.005 AUC of central sklearn on
default credit (same features for both)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import ndtri
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import QuantileTransformer

from hamrah.core.errors import ConfigError, DataError
from hamrah.data.vertical import load_vertical
from hamrah.vertical import lr_coordinated, lr_sshe, run_parties
from hamrah.vertical.features import BOUNDS, quantile_fit, quantile_normal
from hamrah.vertical.lr_common import LRConfig, standardise

# values on a grid, so that ties happen and no value sits within BOUNDS of a quantile without equalling it
GRID = st.integers(-50, 50).map(lambda v: v / 4.0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 60), st.integers(1, 4)), elements=GRID), st.integers(2, 1000))
def test_quantile_normal_is_sklearns_map(x, q):
    table = quantile_fit(x, q)
    ours = quantile_normal(x, table)
    theirs = QuantileTransformer(output_distribution="normal", n_quantiles=min(q, len(x)), subsample=10**9).fit(x)
    np.testing.assert_allclose(table, theirs.quantiles_, atol=1e-9)
    np.testing.assert_allclose(ours, theirs.transform(x), atol=1e-6)


@settings(max_examples=40, deadline=None)
@example(train=np.array([[-4.94065646e-324], [2.22507386e-311]]), new=np.array([[0.0]]))  # subnormal quantiles
@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 40), st.integers(1, 3)), elements=st.floats(-1e6, 1e6, allow_nan=False)
    ),
    arrays(np.float64, st.tuples(st.integers(1, 20), st.just(1)), elements=st.floats(-1e7, 1e7, allow_nan=False)),
)
def test_quantile_normal_is_monotone_bounded_and_finite(train, new):
    table = quantile_fit(train)
    new = np.repeat(new, train.shape[1], axis=1)
    out = quantile_normal(new, table)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= -ndtri(BOUNDS) + 1e-9)
    order = np.argsort(new[:, 0], kind="stable")
    assert np.all(np.diff(out[order], axis=0) >= 0)


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="finite matrix"):
        quantile_fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(DataError, match="2 columns"):
        quantile_normal(np.zeros((3, 1)), quantile_fit(np.zeros((3, 2))))
    with pytest.raises(ConfigError, match="lr.transform = 'rank'"):
        LRConfig(transform="rank")
    assert BOUNDS < 1e-6


@pytest.mark.parametrize("mod", [lr_coordinated, lr_sshe])
def test_default_credit_auc_within_0005_of_central_sklearn_on_the_same_features(mod):
    # Plaintext mode (the encrypted mode gives the same model within fixed-point rounding: test_lr.py);
    # the settings of docs/vertical.md's default-credit row.
    d = load_vertical("default_credit")
    g, h = d["guest"], d["host"].select(d["guest"].ids)
    cfg = LRConfig(
        epochs=20, batch_size=1024, lr=0.3, l2=1 / len(g.ids), encrypted=False, psi=False, transform="quantile"
    )
    z = standardise(np.hstack([g.features, h.features]), None, False, 0.0, "quantile")[0]
    central = roc_auc_score(g.labels, LogisticRegression(max_iter=5000).fit(z, g.labels).decision_function(z))
    roles = {"guest": lambda ch: mod.guest(ch, g, cfg), "host": lambda ch: mod.host(ch, h, cfg)}
    if mod is lr_coordinated:
        roles["arbiter"] = lambda ch: mod.arbiter(ch, None, cfg)
    res, _ = run_parties(roles, timeout_s=120)
    score = (
        standardise(g.features, res["guest"], True, 0.0, "quantile")[0] @ res["guest"].weights
        + standardise(h.features, res["host"], False, 0.0, "quantile")[0] @ res["host"].weights
    )
    assert roc_auc_score(g.labels, score) > central - 0.005
