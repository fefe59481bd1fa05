"""DP-FTRL: tree-aggregated noise on the running sum of clipped updates, without sampling.

Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, *Practical and Private (Deep) Learning without
Sampling or Shuffling* (ICML), the method behind Gboard's production DP: the server releases noisy
*prefix sums* of the clipped client updates through the tree aggregation of Dwork et al. 2010 and
Chan, Shi, Song 2011. Round t of a tree adds the noise of the dyadic nodes covering [1, t]; the model
after round t is theta_0 + (sum of the first t means) + N_t, and each round's released aggregate is
the mean + (N_t - N_{t-1}). A client's update of round j lies in one node per level, so it meets
ceil(log2(k + 1)) noise draws of std z C in a tree of k rounds: the privacy cost of a whole tree is
that of one Gaussian mechanism of multiplier z / sqrt(ceil(log2(k + 1))) (dp-accounting's
``SingleEpochTreeAggregationDpEvent``), **whichever clients take part**, provided each contributes at
most once per tree. The tree restarts every ``tree_rounds`` rounds (their "TreeRestart" variant), so a
client may come back once per tree; the trees compose.

No sampling is assumed, so the guarantee holds on a real server that takes the devices that check in,
as long as the driver refuses a second contribution of one device within a tree (the simulator draws
each tree's cohorts without replacement; the server refuses such a report, see ``docs/dp.md``).

The node noises are drawn from a secret seed in the stage's server state, so a restarted server
rebuilds the same tree: whoever reads that seed (the server's state database) could remove the noise,
as whoever sees the un-noised sum can in central DP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params
from hamrah.core.pipeline import BaseStage, ServerContext, StageTraits


def dyadic_nodes(t: int) -> list[tuple[int, int]]:
    """Return the tree nodes (level, index) whose intervals partition rounds [1, t].

    Node (level, i) covers rounds i 2^level + 1 .. (i + 1) 2^level; the nodes are those of the binary
    expansion of t (at most ceil(log2(t + 1)) of them).

    Example:
        >>> dyadic_nodes(5)
        [(2, 0), (0, 4)]
    """
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ConfigError(f"tree position {t!r}: expected an integer >= 0")
    nodes, start = [], 0
    for level in reversed(range(t.bit_length())):
        if t >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


@dataclass(frozen=True)
class TreeState:
    """DP-FTRL's server state: the secret seed of the node noises (0: not drawn yet) and rounds released."""

    seed: int = 0
    rounds: int = 0


@dataclass(frozen=True)
class TreeAggregationNoise(BaseStage):
    """Server half of DP-FTRL: mean -> sum / D plus the tree noise increment N_t - N_{t-1} (std z C / D per node).

    Attributes:
        noise_multiplier: z, the std of every node's noise over the clip norm.
        clip: C, the per-client clip norm (the matching :class:`~hamrah.privacy.DPClip` enforces it).
        expected_cohort: D, the fixed denominator (the round's cohort size).
        tree_rounds: k, rounds per tree (the tree restarts after k rounds).
    """

    noise_multiplier: float = 1.0
    clip: float = 1.0
    expected_cohort: float = 1.0
    tree_rounds: int = 1
    name: str = "dp_tree"
    traits: ClassVar[StageTraits] = StageTraits("noise", adds_noise_where="aggregate", client_side=False)

    def __post_init__(self) -> None:
        check_number(f"{self.name}: noise_multiplier", self.noise_multiplier, 0.0)
        check_number(f"{self.name}: expected_cohort", self.expected_cohort, 0.0, open_low=True)
        if isinstance(self.tree_rounds, bool) or not isinstance(self.tree_rounds, int) or self.tree_rounds < 1:
            raise ConfigError(f"{self.name}: tree_rounds = {self.tree_rounds!r}: expected an integer >= 1")

    def init_server(self, template: Params) -> TreeState:
        return TreeState()

    def prefix_noise(self, seed: int, tree: int, t: int, like: Params) -> Params:
        """Return N_t of tree ``tree``: the sum of its node noises covering rounds [1, t], std z per node."""
        out = {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in like.items()}
        for level, index in dyadic_nodes(t):
            g = torch.Generator().manual_seed(
                int(np.random.SeedSequence([seed, tree, level, index]).generate_state(1, np.uint64)[0] >> 1)
            )
            for k in out:  # in the aggregate's (the model's) order: the same draws on every restart
                out[k].add_(torch.randn(out[k].shape, generator=g), alpha=self.noise_multiplier)
        return out

    def server(self, aggregate: Params, state: Any, ctx: ServerContext) -> tuple[Params, Any]:
        if any(":" in k for k in aggregate):
            raise ConfigError(
                f"{self.name}: auxiliary entries {sorted(k for k in aggregate if ':' in k)} in the "
                "aggregate; expected none (adaptive clipping is not available with DP-FTRL)"
            )
        seed = state.seed or int(ctx.rng.integers(1, 2**62))
        tree, t = divmod(state.rounds, self.tree_rounds)
        now, before = self.prefix_noise(seed, tree, t + 1, aggregate), self.prefix_noise(seed, tree, t, aggregate)
        scale, std = ctx.num_clients / self.expected_cohort, self.clip / self.expected_cohort
        out = {k: v.to(torch.float32) * scale + (now[k] - before[k]) * std for k, v in aggregate.items()}
        return out, replace(state, seed=seed, rounds=state.rounds + 1)


__all__ = ["TreeAggregationNoise", "TreeState", "dyadic_nodes"]
