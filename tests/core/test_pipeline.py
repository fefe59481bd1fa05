"""The update pipeline: chains, compatibility rules, round processing, wire framing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.aggregate import weighted_mean
from hamrah.core.errors import ConfigError, NotEnoughClients, ProtocolError
from hamrah.core.pipeline import (
    BaseStage,
    Chain,
    DensePayload,
    Identity,
    StageTraits,
    WireReader,
    WireWriter,
    header_nbytes,
    process_round,
    spec_of,
)


def _updates(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: {"a.weight": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)} for k in range(n)}


def _rngs(keys):
    return {k: np.random.default_rng(k) for k in keys}


@dataclass(frozen=True)
class Clip(BaseStage):
    name: str = "clip"
    traits: ClassVar[StageTraits] = StageTraits("clip")


@dataclass(frozen=True)
class Noise(BaseStage):
    name: str = "noise"
    where: str = "aggregate"

    @property
    def traits(self):
        return StageTraits(
            "noise" if self.where == "client" else "server",
            adds_noise_where=self.where,
            client_side=self.where == "client",
        )


@dataclass(frozen=True)
class Codec(BaseStage):
    name: str = "codec"
    ring: bool = False

    @property
    def traits(self):
        return StageTraits("codec", summable_in_ring=self.ring)


@dataclass(frozen=True)
class PlainSum(BaseStage):
    """An insecure stand-in for secure aggregation: returns only the sum."""

    name: str = "sum"
    traits: ClassVar[StageTraits] = StageTraits("secure_sum")

    def aggregate(self, payloads, ctx):
        out = {}
        for p in payloads:
            for k, v in p.params.items():
                out[k] = out[k] + v if k in out else v.clone()
        return out


@dataclass(frozen=True)
class Robust(BaseStage):
    name: str = "median"
    traits: ClassVar[StageTraits] = StageTraits("server", needs_per_client_view=True, client_side=False)

    def combine(self, updates, weights, ctx):
        return {k: torch.stack([u[k] for u in updates]).median(0).values for k in updates[0]}


@dataclass(frozen=True)
class Counter(BaseStage):
    """Counts the rounds a client took part in; adds the count as an auxiliary sum; the server pops it."""

    name: str = "count"

    def init_state(self, template):
        return 0

    def init_server(self, template):
        return {"seen": 0.0}

    def encode(self, update, state, ctx):
        return DensePayload({**update, "count:n": torch.tensor(float(state + 1))}), state + 1

    def server(self, aggregate, state, ctx):
        agg = dict(aggregate)
        n = float(agg.pop("count:n"))
        return agg, {"seen": n}


@dataclass(frozen=True)
class Bounded(BaseStage):
    """A codec that carries values up to ``top`` only, with noise from the client's generator."""

    name: str = "bounded"
    top: float = 10.0
    traits: ClassVar[StageTraits] = StageTraits("codec", summable_in_ring=True)

    def encode(self, update, state, ctx):
        if any(float(v.abs().max()) > self.top for v in update.values()):
            raise ProtocolError(f"bounded: update beyond {self.top}")
        noise = float(ctx.rng.standard_normal())
        return DensePayload({k: v + noise for k, v in update.items()}), state


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    bad=st.sets(st.integers(0, 5)),
    w=st.lists(st.integers(1, 1000), min_size=6, max_size=6),
    summing=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_client_the_chain_cannot_encode_is_left_out_as_if_it_never_reported(n, bad, w, summing, seed):
    ups = _updates(n, seed)
    bad = {k for k in bad if k < n}
    for k in bad:
        ups[k] = {name: v * 1e3 + 20 for name, v in ups[k].items()}  # beyond the codec's range
    weights = {k: w[k] for k in ups}
    chain = Chain([Bounded(), *([PlainSum()] if summing else [])])
    template = {k: torch.zeros_like(v) for k, v in ups[0].items()}
    out = process_round(chain, ups, weights, {}, _rngs(ups), template=template)
    good = {k: v for k, v in ups.items() if k not in bad}
    want = process_round(chain, good, {k: weights[k] for k in good}, {}, _rngs(good), template=template)
    assert set(out.refused) == bad and all("beyond 10" in why for why in out.refused.values())
    assert set(out.bytes.up) == set(good) and set(out.states) == set(good)
    for k in want.aggregate:
        assert torch.equal(out.aggregate[k], want.aggregate[k])


def test_identity_chain_equals_weighted_mean():
    ups = _updates()
    w = {0: 10, 1: 20, 2: 5, 3: 65}
    out = process_round(Chain([Identity(), Clip()]), ups, w, {}, _rngs(ups))
    want = weighted_mean([ups[k] for k in ups], [w[k] for k in ups])
    for k in want:
        torch.testing.assert_close(out.aggregate[k], want[k])


def test_empty_chain_is_identity_and_through_bytes_is_exact():
    ups = _updates()
    w = {k: 1.0 for k in ups}
    a = process_round(Chain([]), ups, w, {}, _rngs(ups))
    b = process_round(Chain([]), ups, w, {}, _rngs(ups), through_bytes=True)
    for k in a.aggregate:
        assert torch.equal(a.aggregate[k], b.aggregate[k])


def test_bytes_equal_serialized_length_and_formula():
    ups = _updates(2)
    p = DensePayload(ups[0])
    spec = spec_of(ups[0])
    assert p.nbytes == len(p.to_bytes()) == header_nbytes(spec) + 4 * 17
    assert header_nbytes(spec) == 4 + 4 + 2 + (2 + 8 + 1 + 8) + (2 + 1 + 1 + 4)
    out = process_round(Chain([Identity()]), ups, {0: 1, 1: 1}, {}, _rngs(ups))
    assert out.bytes.up == {0: p.nbytes, 1: p.nbytes} and out.bytes.down == {0: p.nbytes, 1: p.nbytes}
    assert out.bytes.total_up == 2 * p.nbytes


def test_state_persists_and_server_pops_auxiliary_sum():
    ups = _updates(3)
    chain = Chain([Counter()])
    states, w = {}, {0: 1, 1: 1, 2: 2}
    out = process_round(chain, ups, w, states, _rngs(ups))
    states.update(out.states)
    out2 = process_round(
        chain, {0: ups[0], 2: ups[2]}, {0: 1, 2: 1}, states, _rngs([0, 2]), server_state=out.server_state
    )
    assert out.states == {0: (1,), 1: (1,), 2: (1,)} and out2.states == {0: (2,), 2: (2,)}
    assert out2.server_state == ({"seen": 2.0},) and "count:n" not in out2.aggregate


def test_secure_sum_mode_gives_weighted_mean():
    ups = _updates()
    w = {0: 1, 1: 2, 2: 3, 3: 4}
    out = process_round(Chain([Clip(), PlainSum(), Noise()]), ups, w, {}, _rngs(ups))
    want = weighted_mean([ups[k] for k in ups], [w[k] for k in ups])
    for k in want:
        torch.testing.assert_close(out.aggregate[k], want[k])


@pytest.mark.parametrize(
    "stages, reason",
    [
        ([Noise("n", "client"), Clip()], "clipping (clip) must come before noise (n)"),
        ([PlainSum("s1"), PlainSum("s2")], "two secure aggregation stages (s1, s2)"),
        ([Noise("n"), PlainSum()], "central noise n comes before sum"),
        ([Codec("topk"), PlainSum()], "topk cannot be summed under secure aggregation"),
        ([PlainSum(), Robust()], "median needs each client's update"),
        ([PlainSum(), Clip()], "clip changes client updates but comes after sum"),
        ([Codec("q8"), Codec("topk")], "two codecs (q8, topk)"),
        ([Identity(), Identity()], "expected distinct names"),
        ([Robust("m1"), Robust("m2")], "['m1', 'm2'] each replace the mean"),
    ],
)
def test_incompatible_chains_are_refused_with_reason(stages, reason):
    with pytest.raises(ConfigError) as err:
        Chain(stages)
    assert reason in str(err.value)


def test_compatible_chains_are_accepted():
    Chain([Clip(), Noise("n", "client"), Codec("q", ring=True), PlainSum(), Noise("central")])
    Chain([Clip(), Codec("topk"), Noise("central"), Robust()])


def test_per_client_view_stage_replaces_the_mean():
    ups = _updates(5)
    out = process_round(Chain([Codec("c"), Robust()]), ups, {k: 1 for k in ups}, {}, _rngs(ups))
    want = torch.stack([ups[k]["b"] for k in ups]).median(0).values
    assert torch.equal(out.aggregate["b"], want)


def test_round_input_errors():
    ups = _updates(2)
    with pytest.raises(NotEnoughClients):
        process_round(Chain(), {}, {}, {}, {})
    with pytest.raises(ConfigError, match="expected the same clients"):
        process_round(Chain(), ups, {0: 1}, {}, _rngs(ups))
    with pytest.raises(ConfigError, match="positive finite"):
        process_round(Chain(), ups, {0: 1, 1: -1}, {}, _rngs(ups))
    with pytest.raises(ConfigError, match="state for 2 stages"):
        process_round(Chain(), ups, {0: 1, 1: 1}, {0: (None, None)}, _rngs(ups))


def test_malformed_bytes_raise_protocol_error():
    ups = _updates(1)
    spec = spec_of(ups[0])
    data = DensePayload(ups[0]).to_bytes()
    stage = Identity()
    restored = stage.read(data, spec)
    assert all(torch.equal(restored.params[k], ups[0][k]) for k in ups[0])
    cases = {
        "truncated": data[:-3],
        "trailing": data + b"\0",
        "magic": b"XXXX" + data[4:],
        "codec tag": data[:4] + b"QSGD" + data[8:],
        "names/shapes": data,
        "expected bytes": "text",
    }
    for what, bad in cases.items():
        want_spec = (("other", (1,)),) if what == "names/shapes" else spec
        with pytest.raises(ProtocolError, match=what):
            stage.read(bad, want_spec)


def test_wire_writer_reader_round_trip():
    w = WireWriter(b"TEST", (("x", (2, 3)),))
    w.pack("If", 7, 1.5)
    w.raw(b"abc")
    r = WireReader(w.getvalue(), b"TEST", (("x", (2, 3)),))
    assert r.unpack("If") == (7, 1.5) and r.raw(3) == b"abc"
    r.finish()


def _dp_chain(adaptive):
    from hamrah.privacy import AdaptiveClipConfig, CentralGaussianNoise, DPClip

    cfg = AdaptiveClipConfig(clip_count_stddev=2.0) if adaptive else None
    return Chain([DPClip(0.5, adaptive=adaptive), CentralGaussianNoise(1.0, 0.5, 4.0, cfg)])


@pytest.mark.parametrize("adaptive", [False, True])
def test_through_bytes_accepts_auxiliary_keys_and_equals_in_memory(adaptive):
    chain, ups = _dp_chain(adaptive), _updates()
    w = {k: 1.0 for k in ups}
    a = process_round(chain, ups, w, {}, _rngs(ups), round_idx=3)
    b = process_round(chain, ups, w, {}, _rngs(ups), round_idx=3, through_bytes=True)
    assert set(a.aggregate) == set(ups[0])
    assert all(torch.equal(a.aggregate[k], b.aggregate[k]) for k in a.aggregate)
    assert a.bytes.up == b.bytes.up


def test_wire_spec_lists_the_auxiliary_bit_of_adaptive_clipping():
    from hamrah.core.pipeline import wire_spec

    spec = wire_spec(_dp_chain(True), _updates()[0])
    assert spec[-1] == ("dp_clip:unclipped", (1,)) and spec[:-1] == spec_of(_updates()[0])


def test_empty_round_with_template_releases_central_noise_alone():
    template = {"w": torch.zeros(20000)}
    out = process_round(_dp_chain(False), {}, {}, {}, {}, template=template, round_idx=1)
    std = float(out.aggregate["w"].std())
    assert abs(std - 1.0 * 0.5 / 4.0) < 0.005  # z S / expected cohort
    assert out.bytes.up == {} and out.bytes.down == {}


def test_empty_round_without_template_is_refused():
    with pytest.raises(NotEnoughClients, match="no client update"):
        process_round(Chain([Identity()]), {}, {}, {}, {})
