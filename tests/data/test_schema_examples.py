"""Schema and Examples: what a schema accepts and refuses, JSON round trips, the x/y bridge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.data.strategies import schema_and_columns, schemas

from hamrah.core.errors import DataError
from hamrah.data.examples import MAX_CLASSES, Examples, to_dataset
from hamrah.data.schema import Field, Schema

XY = Schema((Field("x", "float32", (2,)), Field("y", "int64")), label="y")


@settings(max_examples=60, deadline=None)
@given(schemas())
def test_schema_json_round_trip(schema):
    assert Schema.from_json(schema.to_json()) == schema
    assert schema.record_dtype().names == schema.names


@settings(max_examples=60, deadline=None)
@given(schema_and_columns())
def test_valid_columns_pass_unchanged(sc):
    schema, columns = sc
    out = schema.check(columns, "batch")
    for f in schema.fields:
        assert out[f.name].dtype == np.dtype(f.dtype) and out[f.name].shape[1:] == f.shape
        np.testing.assert_array_equal(out[f.name], columns[f.name])


@settings(max_examples=60, deadline=None)
@given(schema_and_columns(), st.data())
def test_a_mismatched_batch_is_refused_naming_the_field(sc, data):
    schema, columns = sc
    victim = data.draw(st.sampled_from(schema.fields))
    how = data.draw(st.sampled_from(["missing", "shape", "extra", "nan", "text"]))
    bad = dict(columns)
    if how == "missing":
        del bad[victim.name]
    elif how == "shape":
        bad[victim.name] = np.zeros((len(columns[victim.name]), *victim.shape, 2), victim.dtype)
    elif how == "extra":
        bad[victim.name + "_extra"] = columns[victim.name]
    elif how == "nan":
        bad[victim.name] = np.full((max(1, len(columns[victim.name])), *victim.shape), np.nan)
    else:
        bad[victim.name] = np.array(["no such category"] * max(1, len(columns[victim.name])))
    with pytest.raises(DataError, match=r"^batch: .*" + ("unexpected field" if how == "extra" else "")) as e:
        schema.check(bad, "batch")
    assert repr(victim.name + ("_extra" if how == "extra" else ""))[1:-1] in str(e.value)


def test_check_messages_say_what_was_expected():
    with pytest.raises(DataError, match=r"field 'x' has shape \[3\] per example, expected \[2\]"):
        XY.check({"x": np.zeros((4, 3)), "y": np.zeros(4, int)}, "f.csv")
    with pytest.raises(DataError, match="field 'y' holds float64 values, expected int64"):
        XY.check({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "f.csv")
    with pytest.raises(DataError, match="different numbers of examples"):
        XY.check({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "f.csv")
    u8 = Schema((Field("p", "uint8"),))
    with pytest.raises(DataError, match="outside uint8's range"):
        u8.check({"p": np.array([256])}, "f")
    cat = Schema((Field("c", "int64", categories=("a", "b")),))
    assert cat.check({"c": np.array(["b", "a"])}, "f")["c"].tolist() == [1, 0]
    with pytest.raises(DataError, match="codes outside 0..1"):
        cat.check({"c": np.array([2])}, "f")


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Field("", "float32"),
        lambda: Field("a", "float16"),
        lambda: Field("a", "int64", (0,)),
        lambda: Field("a", "float32", categories=("x",)),
        lambda: Schema(()),
        lambda: Schema((Field("a", "int64"), Field("a", "int64"))),
        lambda: Schema((Field("a", "int64"),), label="b"),
        lambda: Schema.from_json("{not json", "store"),
        # each of these was a RecursionError, a silently cut or split shape, or numpy's ValueError later
        lambda: Schema.from_json("[" * 100_000, "store"),
        lambda: Schema.from_json('{"fields": [{"name": "a", "dtype": "int64", "shape": "12"}]}'),
        lambda: Schema.from_json('{"fields": [{"name": "a", "dtype": "int64", "shape": [1.5]}]}'),
        lambda: Schema.from_json('{"fields": [{"name": "a", "dtype": "int64", "shape": [], "categories": "ab"}]}'),
        lambda: Field("a", "int64", (2**28,)),  # 2 GiB per example: more than numpy's record can hold
        lambda: Field("a", "uint8", (10**20,)),
    ],
)
def test_bad_schemas_are_refused(bad):
    with pytest.raises(DataError):
        bad()


def test_examples_take_labels_and_array_data():
    ex = Examples(
        XY,
        {"x": np.arange(8, dtype=np.float32).reshape(4, 2), "y": [0, 1, 2, 1]},
        groups=np.array([0, 0, 1, 1]),
        group_names=("a", "b"),
    )
    assert len(ex) == 4 and ex.num_classes == 3
    part = ex.take(np.array([3, 1]))
    assert part.labels.tolist() == [1, 1] and part.groups.tolist() == [1, 0]
    data = ex.to_array_data()
    assert data.x.dtype == torch.float32 and data.x.shape == (4, 2) and data.y.tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError):
        ex["x"][0, 0] = 5  # read-only
    with pytest.raises(DataError, match="outside"):
        ex.take(np.array([4]))
    with pytest.raises(DataError, match="no field 'z'"):
        ex["z"]


def test_several_fields_flatten_and_categorical_one_hot():
    schema = Schema(
        (
            Field("age", "float64"),
            Field("city", "int64", categories=("a", "b", "c")),
            Field("img", "uint8", (2, 2)),
            Field("sick", "bool"),
        ),
        label="sick",
    )
    ex = Examples.from_columns(
        {"age": [30.0, 40.0], "city": ["c", "a"], "img": np.ones((2, 2, 2), np.uint8), "sick": [True, False]}, schema
    )
    data = ex.to_array_data()
    assert data.x.shape == (2, 1 + 3 + 4) and data.x.dtype == torch.float32
    assert data.x[0, 1:4].tolist() == [0, 0, 1] and data.x[1, 1:4].tolist() == [1, 0, 0]
    assert data.y.tolist() == [1, 0]


def test_one_integer_field_stays_token_ids():
    schema = Schema((Field("tokens", "int64", (5,)), Field("next", "int64", (5,))), label="next")
    data = Examples.from_columns({"tokens": np.ones((3, 5), int), "next": np.ones((3, 5), int)}, schema).to_array_data()
    assert data.x.dtype == torch.int64 and data.y.shape == (3, 5)


def test_to_dataset_bridges_to_the_simulator_dataset():
    ex = Examples(
        XY,
        {"x": np.zeros((6, 2), np.float32), "y": [0, 1, 0, 1, 0, 1]},
        groups=np.array([0, 1, 0, 1, 0, 1]),
        group_names=("h1", "h2"),
    )
    ds = to_dataset("toy", ex, ex.take(np.arange(2)))
    assert ds.num_classes == 2 and len(ds.train) == 6 and len(ds.test) == 2
    assert ds.train_groups.tolist() == [0, 1, 0, 1, 0, 1]
    other = Examples(
        Schema((Field("x", "float32", (3,)), Field("y", "int64")), label="y"), {"x": np.zeros((1, 3)), "y": [0]}
    )
    with pytest.raises(DataError, match="schema=train.schema"):
        to_dataset("toy", ex, other)


def test_to_dataset_refuses_negative_class_ids_but_not_the_no_target_label():
    ex = Examples(XY, {"x": np.zeros((3, 2), np.float32), "y": [0, 1, -100]})
    assert to_dataset("toy", ex).num_classes == 2  # -100: torch's ignore_index, an example without a target
    bad = Examples(XY, {"x": np.zeros((3, 2), np.float32), "y": [0, -1, 1]})
    with pytest.raises(DataError, match=r"example 1 has label 'y' = -1; expected class ids"):  # was a crash in training
        to_dataset("toy", ex, bad)


def test_a_label_of_sparse_ids_is_refused_not_turned_into_a_hundred_million_classes():
    ex = Examples(XY, {"x": np.zeros((2, 2), np.float32), "y": [3, 10**8]})  # a model of 10^8 outputs, before
    with pytest.raises(DataError, match=r"goes up to 100,000,000, which would make 100,000,001 classes; expected"):
        to_dataset("toy", ex)
    ok = Examples(XY, {"x": np.zeros((2, 2), np.float32), "y": [3, MAX_CLASSES - 1]})
    assert to_dataset("toy", ok).num_classes == MAX_CLASSES


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 5),
    st.sampled_from([(), (3,), (1, 2, 2)]),
    st.sampled_from([torch.float32, torch.int64]),
    st.sampled_from([(), (4,)]),
)
def test_array_data_round_trips_through_examples(n, x_shape, x_dtype, y_shape):
    from hamrah.data.federated import ArrayData

    data = ArrayData(
        torch.arange(n * int(np.prod(x_shape)), dtype=x_dtype).reshape(n, *x_shape),
        torch.arange(n * int(np.prod(y_shape))).reshape(n, *y_shape),
    )
    back = Examples.from_array_data(data).to_array_data()
    assert torch.equal(back.x, data.x) and torch.equal(back.y, data.y) and back.x.dtype == data.x.dtype


def test_a_built_in_dataset_as_examples_keeps_its_natural_clients():
    from hamrah.data.examples import dataset_examples
    from hamrah.data.federated import ArrayData, Dataset
    from hamrah.data.partition import PartitionSpec, split_examples

    d = ArrayData(torch.zeros(6, 2), torch.tensor([0, 1, 0, 1, 0, 1]))
    ds = Dataset("toy", d, d, 2, train_groups=np.array([0, 0, 1, 1, 2, 2]), group_names=("a", "b", "c"))
    train, test = dataset_examples(ds)
    assert train.schema.describe() == "x: float32[2], y: int64 (label)" and len(test) == 6
    assert [p.tolist() for p in split_examples(train, PartitionSpec("natural", None), seed=0)] == [
        [0, 1],
        [2, 3],
        [4, 5],
    ]
