"""The compression package's public API: every name in ``__all__`` exists; each codec is a pipeline stage."""

from __future__ import annotations

from hamrah import compression
from hamrah.core import pipeline
from hamrah.core.pipeline import BaseStage, StageTraits


def test_all_names_exist_once():
    for mod in (compression, pipeline):
        assert len(mod.__all__) == len(set(mod.__all__))
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.__all__ names {name!r}, which does not exist"


def test_codecs_are_stages_with_codec_traits():
    stages = [
        compression.HalfPrecision(),
        compression.RandomMask(),
        compression.SignEF(),
        compression.StochasticQuantizer(),
        compression.TopK(),
    ]
    for s in stages:
        assert isinstance(s, BaseStage) and isinstance(s.traits, StageTraits) and s.traits.kind == "codec"
    assert len({s.name for s in stages}) == len(stages)
