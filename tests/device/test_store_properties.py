"""Property tests of the Example Store's documented guarantees: expiry, and imports that are all or nothing."""

from __future__ import annotations

import argparse
import csv
import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DataError
from hamrah.data.schema import Field, Schema
from hamrah.device.store import ExampleStore
from hamrah.device.store_import import import_command

SCHEMA = Schema((Field("v", "float32"), Field("y", "int64")), label="y")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1000), st.one_of(st.none(), st.floats(0.001, 1000))), max_size=12),
    st.floats(0, 2500),
)
def test_a_record_is_served_exactly_while_it_has_not_expired(writes, now):
    with ExampleStore(":memory:", SCHEMA) as store:
        for i, (t, ttl) in enumerate(writes):
            store.append({"v": float(i), "y": i}, timestamp=t, ttl_s=ttl)
        live = [i for i, (t, ttl) in enumerate(writes) if ttl is None or t + ttl > now]
        assert store.count(now=now) == len(live)
        assert store.examples(now=now)["y"].tolist() == live  # in insertion order
        assert store.expire(now=now) == len(writes) - len(live)
        assert store.count(now=0.0) == len(live)


cells = st.sampled_from(["1", "2.5", "-3", "", "x", "NA", "7"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(cells, cells), max_size=8), st.booleans())
def test_store_import_writes_every_row_or_leaves_no_store(tmp_path, rows, existing):
    buf = io.StringIO()
    csv.writer(buf).writerows([["v", "y"], *rows])
    (tmp_path / "in.csv").write_text(buf.getvalue())
    store = tmp_path / "s.db"
    store.unlink(missing_ok=True)
    before = 0
    if existing:
        with ExampleStore(store, SCHEMA) as s:
            s.append({"v": 1.0, "y": 1})
        before = 1
    args = argparse.Namespace(
        out=str(store),
        source=str(tmp_path / "in.csv"),
        format=None,
        label="y",
        features=None,
        columns=None,
        client_column=None,
        group=None,
        split=None,
        missing="error",
        ttl=None,
        schema=None,
        save_schema=None,
    )
    try:
        import_command(args, io.StringIO())
    except DataError:
        assert store.exists() == existing and not (tmp_path / "s.db.partial").exists()
        if existing:
            with ExampleStore(store) as s:
                assert s.count() == before, "a failed import added nothing"
        return
    with ExampleStore(store) as s:
        assert s.count() == before + len(rows)
        if s.schema.field("v").categories is None:  # an all-text column is categorical in a new store
            np.testing.assert_array_equal(s.examples()["v"][before:], [float(v) for v, _ in rows])
