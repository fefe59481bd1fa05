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
from hamrah.secagg import STAGES, SecAggConfig, masking_graph, run_secure_aggregation
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
    leave = draw(st.lists(st.sampled_from([0, 1, 2, 3, NEVER, NEVER, NEVER]), min_size=n, max_size=n))
    xs = draw(st.lists(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=M, max_size=M),
                       min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**16))
    return SecAggConfig(num_clients=n, vector_length=M, neighbours=k, threshold=t, input_bits=8), leave, xs, seed


def _graph(config: SecAggConfig, seed: int) -> dict[int, frozenset[int]]:
    # The driver seeds the server's graph with the last of n + 1 SeedSequence words (driver.py).
    n = config.num_clients
    graph_seed = int(np.random.SeedSequence(seed).generate_state(n + 1, dtype=np.uint64)[n])
    return masking_graph(range(n), config.neighbours, graph_seed)


def _first_failing_stage(config: SecAggConfig, leave: list[int], graph) -> str | None:
    """The documented abort rule, evaluated stage by stage; None when the round must succeed."""
    t, n = config.threshold, config.num_clients
    alive = [{u for u in range(n) if leave[u] > i} for i in range(len(STAGES))]  # U1 .. U4
    u2, u3 = alive[1], alive[2]
    needed = u3 | {u for u in u2 - u3 if graph[u] & u3}
    for i, stage in enumerate(STAGES):
        survivors = alive[i]
        owners = survivors if i < 2 else needed
        if not survivors or any(len((graph[u] | {u}) & survivors) < t for u in owners):
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
