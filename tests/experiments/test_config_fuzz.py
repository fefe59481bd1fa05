"""Property: every config the project ships, mutated (values of other types, huge or non-finite numbers, NUL
and unicode text, deleted keys, unknown keys and sections, tables nested thousands deep), either loads or is
refused with one ConfigError line naming what is wrong; never a TypeError, ValueError, KeyError,
OverflowError or RecursionError. The experiment config is also prepared (data split, model and algorithm
built) up to just before training. Regressions of what the fuzzing found are pinned below it.

A longer hunt than the suite's:
``HAMRAH_FUZZ_EXAMPLES=5000 python -m pytest -n 0 tests/experiments/test_config_fuzz.py``
(60 examples per property by default)."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hamrah.algorithms import ALGORITHMS
from hamrah.core.config_read import MAX_DEPTH, check_plain
from hamrah.core.errors import ConfigError, DataError, HamrahError
from hamrah.experiments.config import from_dict, read_toml
from hamrah.experiments.config_sections import DATASETS, MODELS, PARTITIONS
from hamrah.experiments.lab_config import lab_from_dict
from hamrah.experiments.runner import prepare
from hamrah.server.config import server_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(ROOT.glob("configs/*.toml")) + sorted(ROOT.glob("examples/*/*.toml"))
EXPERIMENTS = [
    p for p in SHIPPED if not p.name.startswith(("vertical_", "lab_", "server_")) and "_server" not in p.name
]
LABS = [p for p in SHIPPED if p.name.startswith("lab_")]
SERVERS = [p for p in SHIPPED if p.name.startswith("server_") or p.name.endswith("_server.toml")]
PREPARED = [p for p in EXPERIMENTS if "keyboard" not in p.name]  # the keyboard task reads its data for 1 s
RAW = {p: tomllib.loads(p.read_text(encoding="utf-8")) for p in SHIPPED}
EXAMPLES = int(os.environ.get("HAMRAH_FUZZ_EXAMPLES", "60"))  # a longer hunt: HAMRAH_FUZZ_EXAMPLES=5000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nested(depth: int) -> dict:
    table: dict = {}
    for _ in range(depth):
        table = {"k": table}
    return table


SCALARS = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**63, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["", " ", "inf", "auto", "a\x00b", "\u00fc\u202e\u6f22", "../x", "a\nb"]),
    st.booleans(),
)
VALUES = st.one_of(
    st.recursive(
        SCALARS,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
        max_leaves=6,
    ),
    st.integers(min_value=MAX_DEPTH, max_value=3000).map(nested),
)


def _kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    return "number" if isinstance(v, (int, float)) else type(v).__name__


def _tables(raw: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """The paths of every table in ``raw`` (the top level as ``()``)."""
    out = [prefix]
    for k, v in raw.items():
        if isinstance(v, dict) and len(prefix) < 3:
            out += _tables(v, (*prefix, k))
    return out


def _mutate(raw: dict, data) -> str | None:
    """Apply one drawn mutation to ``raw``; return the dotted key a refusal must name (a value of another kind
    than the shipped one in a ``section.key``), else None."""
    path = data.draw(st.sampled_from(_tables(raw)))
    table = raw
    for k in path:
        table = table[k]
    op = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    if op != "add" and table:
        key = data.draw(st.sampled_from(sorted(table)))
        if op == "delete":
            del table[key]
            return None
        old, table[key] = table[key], data.draw(VALUES)
        if len(path) == 1 and isinstance(old, (bool, int, float, str)) and _kind(old) != _kind(table[key]):
            return f"{path[0]}.{key}"
        return None
    table[data.draw(st.one_of(st.sampled_from(["zz_unknown", "", "\u00fc", "a.b"]), st.text(max_size=6)))] = data.draw(
        VALUES
    )
    return None


def _one_line(err: HamrahError, named: str | None) -> None:
    event("refused")
    text = str(err)
    assert text and "\n" not in text and len(text) < 2000, text[:3000]
    if named is not None:
        assert named in text, (named, text)


def _mutated(paths: list[Path], data) -> tuple[Path, dict, str | None]:
    path = data.draw(st.sampled_from(paths))
    raw = copy.deepcopy(RAW[path])
    named = [_mutate(raw, data) for _ in range(data.draw(st.integers(1, 3)))]
    return path, raw, named[0] if len(named) == 1 else None


@FUZZ
@given(st.data())
def test_a_mutated_experiment_config_loads_or_is_one_line_naming_the_key(data):
    path, raw, named = _mutated(EXPERIMENTS, data)
    try:
        from_dict(raw, path.parent)
    except ConfigError as e:
        _one_line(e, named)


@FUZZ
@given(st.data())
def test_a_mutated_lab_config_loads_or_is_one_line(data):
    path, raw, named = _mutated(LABS, data)
    try:
        lab_from_dict(raw, path.parent)
    except ConfigError as e:
        _one_line(e, named if named and not named.startswith(("attacks.", "defences.")) else None)


@FUZZ
@given(st.data())
def test_a_mutated_server_config_loads_or_is_one_line(data):
    path, raw, named = _mutated(SERVERS, data)
    try:
        table = raw.pop("server", {})
        raw.pop("dashboard", None)
        from_dict(raw, path.parent)
        if not isinstance(table, dict):
            return  # load_server_config refuses it by name
        server_config(table)
    except ConfigError as e:
        _one_line(e, named)


NAMES = st.sampled_from(
    [*DATASETS, *PARTITIONS, *MODELS, *ALGORITHMS, "quantize", "topk", "mask", "float16", "central", "local", "dpsgd"]
)
INTEGERS = st.one_of(st.integers(min_value=-3, max_value=10**7), st.sampled_from([2**62, 2**63 - 1, -(2**63)]))
NUMBERS = st.one_of(
    INTEGERS,
    st.floats(min_value=-1.0, max_value=1e4),
    st.sampled_from([0.0, 1e-300, 1e308, float("nan"), float("inf"), -float("inf")]),
)


def _plausible(old: object):
    """A wrong value that still passes the type check: what reaches :func:`prepare`."""
    if isinstance(old, bool):
        return st.booleans()
    if isinstance(old, (int, float)):
        return INTEGERS if isinstance(old, int) else NUMBERS
    return NAMES if isinstance(old, str) else SCALARS


@settings(max_examples=EXAMPLES * 2 // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_mutated_config_that_loads_is_prepared_or_refused_in_one_line(data):
    path = data.draw(st.sampled_from(PREPARED))
    raw = copy.deepcopy(RAW[path])
    for _ in range(data.draw(st.integers(1, 2))):
        table = raw[data.draw(st.sampled_from(sorted(raw)))]
        key = data.draw(st.sampled_from(sorted(table)))
        table[key] = data.draw(_plausible(table[key]))
    try:
        prepare(from_dict(raw, path.parent))
        event("prepared")
    except HamrahError as e:
        _one_line(e, None)


# What the fuzzing found: each raised a bare Python error before.

QUICK = {"data": {"dataset": "mnist", "num_clients": 10}, "algorithm": {"client_fraction": 0.2}}


def _with(section: str, key: str, value) -> dict:
    raw = copy.deepcopy(QUICK)
    raw.setdefault(section, {})[key] = value
    return raw


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        (
            "algorithm",
            "lr",
            10**400,
            "algorithm.lr = <an integer of about 400 digits>: expected an integer within 64 bits",
        ),
        ("data", "num_clients", 10**400, "data.num_clients = <an integer of about 400 digits>"),
        ("data", "num_clients", 10**12, "data.num_clients = 1000000000000: expected an integer in 1..10000000"),
        ("data", "dataset", nested(3000), "data.dataset.k.k.k"),
        ("data", "dataset", {"k": {"k": 1}}, "data.dataset = {'k': {'k': 1}}: expected a string, got dict"),
        ("data", "path", "a\x00b", "data.path = 'a\\x00b': expected text without NUL characters"),
        ("data", "path", " ", "data.path = ' ': expected a folder or file"),
        ("task", "path", "", "task.path = '': expected a folder"),
        ("run", "seed", 2**63, "run.seed = 9223372036854775808: expected an integer within 64 bits"),
        ("compression", "fraction", 10**400, "compression.fraction = <an integer of about 400 digits>"),
    ],
)
def test_values_beyond_what_a_key_can_hold_are_refused_by_name(section, key, value, message):
    raw = _with(section, key, value)
    if section == "task":
        raw["task"]["entry"] = "m:t"
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    assert message in str(e.value)


def test_homomorphic_encryption_bound_too_large_for_a_float_is_refused():
    raw = _with("homomorphic_encryption", "bound", 1e308)
    with pytest.raises(ConfigError, match=r"homomorphic_encryption \(paillier\): bound \* 2\^precision_bits"):
        from_dict(raw)


@pytest.mark.parametrize(
    ("aggregator", "message"),
    [
        ({"name": "norm_bound", "bound": 0.1, "noise_std": 0.1, "seed": ""}, "norm_bound: seed = '': expected an int"),
        ({"name": "norm_bound", "bound": 0.1, "noise_std": 0.1, "seed": float("inf")}, "seed = inf: expected"),
        ({"name": "median", "x": nested(3000)}, "server.aggregator.x = {'k': {'k': {'k': {...}}}}: expected a number"),
        ({"name": "median", "x": 10**400}, "server.aggregator.x = <an integer of about 400 digits>"),
    ],
)
def test_a_server_aggregator_with_a_bad_parameter_is_one_line(aggregator, message):
    with pytest.raises(ConfigError) as e:
        server_config({"aggregator": aggregator})
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [(10**400, "server.goal_count = <an integer of about 400 digits>"), ("a\x00b", "server.population = 'a\\x00b'")],
)
def test_server_keys_beyond_what_they_can_hold_are_refused_by_name(value, message):
    key = "goal_count" if isinstance(value, int) else "population"
    with pytest.raises(ConfigError) as e:
        server_config({key: value})
    assert message in str(e.value)


def test_a_lab_given_a_huge_seed_or_deep_parameters_is_refused_by_name():
    raw = copy.deepcopy(RAW[ROOT / "configs" / "lab_mnist.toml"])
    raw["run"]["seed"] = 10**400
    with pytest.raises(ConfigError, match=r"run.seed = <an integer of about 400 digits>"):
        lab_from_dict(raw)
    raw = copy.deepcopy(RAW[ROOT / "configs" / "lab_mnist.toml"])
    raw["lab"]["attacks"] = nested(3000)
    with pytest.raises(ConfigError, match=r"^lab.attacks.k.k.k"):
        lab_from_dict(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = 1" + "0" * 5000, "an integer of thousands of digits; expected integers within 64 bits"),
        ("a = " + "[" * 3000 + "]" * 3000, "arrays or inline tables nested hundreds deep"),
        ("[data" + ".k" * 3000 + "]\nx = 1", f"data{'.k' * MAX_DEPTH}: nested more than {MAX_DEPTH} tables"),
        ("a = 10000000000000000000000", "a = 10000000000000000000000: expected an integer within 64 bits"),
    ],
)
def test_toml_beyond_what_a_config_can_hold_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_toml(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_a_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[data]\nnum_clients = 5\n")
    assert read_toml(path) == {"data": {"num_clients": 5}}


def test_check_plain_walks_without_recursion():
    check_plain({"a": nested(MAX_DEPTH - 1)})
    with pytest.raises(ConfigError, match="nested more than"):
        check_plain({"a": nested(100_000)})


@pytest.mark.parametrize("content", [b"", b"\x1f\x8b\x08\x00garbage", bytes(range(256))])
def test_a_damaged_cifar10_archive_is_a_data_error(tmp_path, content):
    from hamrah.data.cifar10 import load_cifar10

    path = tmp_path / "cifar10_jpeg_full.tar.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"cannot read CIFAR-10 \(.*\); expected the cifar10_jpeg tar.gz"):
        load_cifar10(path)
