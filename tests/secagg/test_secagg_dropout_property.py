"""Property: for SecAgg and SecAgg+, any drop-out pattern (any client, any stage) that leaves every needed
secret with at least t surviving holders gives exactly the sum of the contributors' quantized inputs in
the ring; any other pattern aborts with DropoutThresholdExceeded naming the first stage that fell short.

The oracle below is written from the rule in ``docs/secagg.md`` (Threat model / SecAgg+), not from the
server's code: at advertise_keys and share_keys every surviving client needs t surviving holders (itself
and its neighbours); from masked_input on, every client whose secret unmasking must rebuild (every
contributor, and every dropped client with a contributing neighbour) needs t surviving holders. For full
SecAgg (the complete graph) this is |U_i| >= t at every stage.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DropoutThresholdExceeded
from hamrah.secagg import (
    ACTIVE_STAGES,
    STAGES,
    SecAggConfig,
    masking_graph,
    resolve_consistency_threshold,
    run_secure_aggregation,
    simulated_identities,
)
from hamrah.secagg.ring import quantize, reduce, ring_dtype

M = 3
NEVER = len(STAGES)  # a client whose drop stage is NEVER stays to the end


@st.composite
def scenarios(draw):
    variant = draw(st.sampled_from(["secagg", "secagg+"]))
    n = draw(st.integers(5 if variant == "secagg+" else 3, 10))
    k = draw(st.sampled_from(list(range(2, n - 1, 2)))) if variant == "secagg+" else None
    holders = n if k is None else k + 1
    t = draw(st.integers(1, holders))
    # Each client leaves at one stage or never; never-leaving is likelier so both outcomes are common.
    leave = draw(st.lists(st.sampled_from([0, 1, 2, 3] + [NEVER] * 8), min_size=n, max_size=n))
    xs = draw(st.lists(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=M, max_size=M), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**16))
    return SecAggConfig(num_clients=n, vector_length=M, neighbours=k, threshold=t, input_bits=8), leave, xs, seed


def _graph(config: SecAggConfig, seed: int) -> dict[int, frozenset[int]]:
    # The driver seeds the server's graph with the last of n + 1 SeedSequence words (driver.py).
    n = config.num_clients
    graph_seed = int(np.random.SeedSequence(seed).generate_state(n + 1, dtype=np.uint64)[n])
    return masking_graph(range(n), config.neighbours, graph_seed)


def _first_failing_stage(config: SecAggConfig, leave: list[int], graph, active: bool = False) -> str | None:
    """The documented abort rule, evaluated stage by stage; None when the round must succeed.

    Active variant: the same rule, plus at least T contributors (masked_input) and T signers (consistency_check).
    """
    t, n = config.threshold, config.num_clients
    stages = ACTIVE_STAGES if active else STAGES
    big_t = resolve_consistency_threshold(config) if active else 0
    alive = [{u for u in range(n) if leave[u] > i} for i in range(len(stages))]  # U1 .. U4 (U5)
    u2, u3 = alive[1], alive[2]
    needed = u3 | {u for u in u2 - u3 if graph[u] & u3}
    for i, stage in enumerate(stages):
        survivors = alive[i]
        if stage == "consistency_check":
            if len(survivors) < big_t:
                return stage
            continue
        owners = survivors if i < 2 else needed
        if not survivors or any(len((graph[u] | {u}) & survivors) < t for u in owners):
            return stage
        if stage == "masked_input" and len(survivors) < big_t:
            return stage
    return None


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_any_dropout_pattern_gives_the_exact_sum_or_a_clean_abort(scenario):
    config, leave, xs, seed = scenario
    inputs = [np.asarray(x) for x in xs]
    dropouts = {stage: {u for u in range(config.num_clients) if leave[u] == i} for i, stage in enumerate(STAGES)}
    failing = _first_failing_stage(config, leave, _graph(config, seed))
    event(f"{config.variant}: {failing or 'success'}")
    if failing is not None:
        with pytest.raises(DropoutThresholdExceeded, match=f"stage '{failing}'"):
            run_secure_aggregation(inputs, config, dropouts, seed=seed)
        return
    run = run_secure_aggregation(inputs, config, dropouts, seed=seed)
    contributors = [u for u in range(config.num_clients) if leave[u] > 2]
    assert list(run.result.contributors) == contributors
    dtype = ring_dtype(config.ring_bits)
    expected = np.zeros(M, dtype=dtype)
    for u in contributors:
        expected += quantize(inputs[u], config.clip, config.input_bits, dtype)
    # Exact: the unmasked ring sum is the plain sum of the quantized inputs, bit for bit.
    assert reduce(expected, config.ring_bits).tolist() == run.result.ring_sum.tolist()


@settings(max_examples=30, deadline=None)
@given(scenarios(), st.lists(st.sampled_from([0, 1, 2, 3, 4] + [5] * 12), min_size=10, max_size=10))
def test_the_actively_secure_round_gives_the_exact_sum_or_a_clean_abort(scenario, leave5):
    config, _, xs, seed = scenario
    n = config.num_clients
    leave = leave5[:n]  # 0..4: the stage of ACTIVE_STAGES where the client leaves; 5: never
    inputs = [np.asarray(x) for x in xs]
    dropouts = {stage: {u for u in range(n) if leave[u] == i} for i, stage in enumerate(ACTIVE_STAGES)}
    failing = _first_failing_stage(config, leave, _graph(config, seed), active=True)
    event(f"active {config.variant}: {failing or 'success'}")
    identities = simulated_identities(n, seed)
    if failing is not None:
        with pytest.raises(DropoutThresholdExceeded, match=f"stage '{failing}'"):
            run_secure_aggregation(inputs, config, dropouts, seed=seed, identities=identities)
        return
    run = run_secure_aggregation(inputs, config, dropouts, seed=seed, identities=identities)
    contributors = [u for u in range(n) if leave[u] > 2]
    assert list(run.result.contributors) == contributors
    dtype = ring_dtype(config.ring_bits)
    expected = np.zeros(M, dtype=dtype)
    for u in contributors:
        expected += quantize(inputs[u], config.clip, config.input_bits, dtype)
    assert reduce(expected, config.ring_bits).tolist() == run.result.ring_sum.tolist()
