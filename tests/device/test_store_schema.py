"""The Example Store with a declared schema: records of named fields, expiry, refusals, old stores, import."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.data.strategies import schema_and_columns

from hamrah.cli import main
from hamrah.core.errors import DataError
from hamrah.data.examples import Examples
from hamrah.data.schema import Field, Schema
from hamrah.device.store import ExampleStore
from hamrah.device.store_import import fill_store

MOVIES = Schema(
    (
        Field("user", "int64"),
        Field("movie", "int64"),
        Field("genre", "int64", categories=("comedy", "drama", "horror")),
        Field("liked", "int64"),
    ),
    label="liked",
)
REPO = Path(__file__).resolve().parents[2]


def test_the_app_adds_examples_as_the_user_reacts_and_reads_back_the_live_ones(tmp_path):
    with ExampleStore(tmp_path / "phone.db", MOVIES) as store:
        store.append({"user": 1, "movie": 17, "genre": "drama", "liked": 1}, timestamp=100.0, ttl_s=50.0)
        store.append({"user": 1, "movie": 4, "genre": "horror", "liked": 0}, timestamp=120.0)
        assert store.count(now=130.0) == 2
        live = store.examples(now=160.0)  # the first reaction expired at 150
        assert live["movie"].tolist() == [4] and live["genre"].tolist() == [2] and live.labels.tolist() == [0]
        assert store.expire(now=160.0) == 1 and store.count(now=0.0) == 1
    with ExampleStore(tmp_path / "phone.db") as store:  # the schema is kept in the file
        assert store.schema == MOVIES
        assert store.read_all(now=0.0).x.shape == (1, 2 + 3)  # user, movie, one-hot genre


@pytest.mark.parametrize(
    "record, match",
    [
        ({"user": 1, "movie": 2, "genre": "western", "liked": 1}, "unknown category 'western'"),
        ({"user": 1, "movie": 2, "genre": "drama"}, "field 'liked' is missing"),
        ({"user": 1, "movie": 2, "genre": "drama", "liked": 1, "rating": 5}, "unexpected field 'rating'"),
        ({"user": 1.5, "movie": 2, "genre": "drama", "liked": 1}, "field 'user' holds float64 values, expected int64"),
        ({"user": [1, 2], "movie": 2, "genre": "drama", "liked": 1}, r"field 'user' has shape \[2\] per example"),
        ([1, 2, "drama", 1], "a record is a mapping"),
    ],
)
def test_a_record_that_does_not_match_the_schema_is_refused(tmp_path, record, match):
    with ExampleStore(tmp_path / "s.db", MOVIES) as store:
        with pytest.raises(DataError, match=match):
            store.append(record)
        assert store.count() == 0


@settings(max_examples=25, deadline=None)
@given(schema_and_columns(max_rows=5), st.integers(0, 10))
def test_any_schema_round_trips_through_the_store(tmp_path_factory, sc, bad_row):
    schema, columns = sc
    path = tmp_path_factory.mktemp("s") / "s.db"
    with ExampleStore(path, schema) as store:
        assert store.append_many(columns) == len(next(iter(columns.values())))
        # a batch with one bad row adds nothing (one transaction)
        n = len(next(iter(columns.values())))
        if n:
            f = schema.fields[bad_row % len(schema.fields)]
            broken = dict(columns)
            broken[f.name] = np.zeros((n, *f.shape, 2))  # wrong shape on every row
            with pytest.raises(DataError) as e:
                store.append_many(broken)
            assert repr(f.name) in str(e.value)
    with ExampleStore(path, schema) as store:
        back = store.examples()
        assert store.count() == n and back.schema == schema
        for name, v in columns.items():
            np.testing.assert_array_equal(back[name], v)


def test_a_store_of_another_schema_is_refused_with_how_to_rebuild(tmp_path):
    with ExampleStore(tmp_path / "s.db", MOVIES):
        pass
    other = Schema((Field("x", "float32", (3,)), Field("y", "int64")), label="y")
    with pytest.raises(
        DataError,
        match=r"expected \(x: float32\[3\], y: int64 \(label\)\); rebuild it with "
        r"`hamrah store import",
    ):
        ExampleStore(tmp_path / "s.db", other)
    with ExampleStore(tmp_path / "fresh.db") as store, pytest.raises(DataError, match="no schema declared"):
        store.append_many({"x": np.zeros((1, 3))})


def test_corrupt_records_newer_formats_and_bad_ttl(tmp_path):
    path = tmp_path / "s.db"
    with ExampleStore(path, MOVIES) as store:
        store.append({"user": 1, "movie": 2, "genre": "drama", "liked": 1})
        with pytest.raises(DataError, match="ttl_s = -1: expected a positive number"):
            store.append({"user": 1, "movie": 2, "genre": "drama", "liked": 1}, ttl_s=-1)
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET record = x'00ff'")
    db.commit()
    with ExampleStore(path) as store, pytest.raises(DataError, match="corrupt records"):
        store.examples()
    db.execute("UPDATE meta SET value = '3' WHERE key = 'format'")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="format '3', this hamrah reads format 2"):
        ExampleStore(path)


# ---- stores written before named fields (x/y blobs) ------------------------------------------------

_OLD = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE examples (id INTEGER PRIMARY KEY AUTOINCREMENT, x BLOB NOT NULL, y BLOB NOT NULL,
                       created_at REAL NOT NULL, expires_at REAL);
CREATE TABLE runtime (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def _old_store(path: Path, xs: np.ndarray, ys: np.ndarray) -> None:
    db = sqlite3.connect(path)
    db.executescript(_OLD)
    if len(xs):
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("x_shape", ",".join(map(str, xs.shape[1:]))),
                ("x_dtype", str(xs.dtype)),
                ("y_shape", ""),
                ("y_dtype", str(ys.dtype)),
            ],
        )
        db.executemany(
            "INSERT INTO examples (x, y, created_at, expires_at) VALUES (?, ?, ?, ?)",
            [(x.tobytes(), y.tobytes(), 10.0, 20.0 if i == 0 else None) for i, (x, y) in enumerate(zip(xs, ys))],
        )
    db.commit()
    db.close()


def test_an_old_x_y_store_still_opens_reads_and_takes_x_y_examples(tmp_path):
    xs = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    ys = np.array([3, 1, 4], np.int64)
    path = tmp_path / "old.db"
    _old_store(path, xs, ys)
    with ExampleStore(path) as store:
        assert store.schema.describe() == "x: float32[2, 4], y: int64 (label)"
        data = store.read_all(now=15.0)
        assert np.array_equal(data.x.numpy(), xs) and data.y.tolist() == [3, 1, 4]
        assert store.count(now=25.0) == 2
        store.add(np.ones((2, 4), np.float32), 9)
        assert store.read_all(now=25.0).y.tolist() == [1, 4, 9]
        assert store.expire(now=25.0) == 1
        with pytest.raises(DataError, match=r"records are \(x: float32\[2, 4\], y: int64 \(label\)\).*rebuild it"):
            store.declare(MOVIES)


def test_an_empty_old_store_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    _old_store(path, np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
    with ExampleStore(path, MOVIES) as store:
        store.append({"user": 1, "movie": 2, "genre": "comedy", "liked": 0})
        assert store.count() == 1
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "examples" not in tables and "records" in tables


# ---- filling a store: fill_store and `hamrah store import` -----------------------------------------


def test_fill_store_is_all_or_nothing(tmp_path):
    ex = Examples(MOVIES, {"user": [1, 2], "movie": [3, 4], "genre": ["drama", "comedy"], "liked": [1, 0]})
    path = tmp_path / "s.db"
    assert fill_store(path, ex, ttl_s=3600) == 2
    assert fill_store(path, ex) == 2  # appends to an existing store of the same schema
    other = Examples(Schema((Field("v", "float32"),)), {"v": [1.0]})
    with pytest.raises(DataError, match="rebuild it"):
        fill_store(path, other)
    with ExampleStore(path) as store:
        assert store.count() == 4
    assert not (tmp_path / "s.db.partial").exists()


def test_store_import_from_csv_by_group_and_its_errors(tmp_path, capsys):
    a = tmp_path / "hospital_a.csv"
    a.write_text("age,sick\n30,1\n41,0\n")
    (tmp_path / "hospital_b.csv").write_text("age,sick\n50,1\n")
    out = tmp_path / "a.db"
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(out),
                "--from",
                str(tmp_path),
                "--label",
                "sick",
                "--group",
                "hospital_a",
            ]
        )
        == 0
    )
    assert "imported 2 examples (age: float32, sick: int64 (label))" in capsys.readouterr().out
    assert main(["store", "count", "--store", str(out)]) == 0
    assert "2 live examples (age: float32, sick: int64 (label))" in capsys.readouterr().out
    bad = tmp_path / "b.db"
    assert main(["store", "import", "--store", str(bad), "--from", str(a), "--label", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no label column 'nope' (columns: age, sick)" in err
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(bad),
                "--from",
                str(tmp_path),
                "--label",
                "sick",
                "--group",
                "hospital_z",
            ]
        )
        == 2
    )
    assert "no client 'hospital_z' (clients: hospital_a, hospital_b)" in capsys.readouterr().err
    assert not bad.exists() and not (tmp_path / "b.db.partial").exists()


def test_store_import_of_a_large_file_shows_progress(tmp_path, capsys):
    f = tmp_path / "big.csv"
    f.write_text("v,y\n" + "".join(f"{i},{i % 2}\n" for i in range(12_000)))
    assert (
        main(["store", "import", "--store", str(tmp_path / "s.db"), "--from", str(f), "--label", "y", "--ttl", "86400"])
        == 0
    )
    captured = capsys.readouterr()
    assert "12,000 / 12,000 examples" in captured.err and "imported 12,000 examples" in captured.out
    with ExampleStore(tmp_path / "s.db") as store:
        assert store.count() == 12_000 and store.examples()["v"][-1] == 11_999


def test_store_import_of_the_bundled_nsl_kdd_sample(tmp_path):
    kdd = REPO / "data" / "tabular" / "nsl_kdd_sample"
    columns = (kdd / "columns.txt").read_text().strip()
    features = ",".join(columns.split(",")[:41])
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "k.db"),
                "--from",
                str(kdd / "KDDTrain+_20Percent_every12.txt.gz"),
                "--columns",
                columns,
                "--features",
                features,
                "--label",
                "attack",
            ]
        )
        == 0
    )
    with ExampleStore(tmp_path / "k.db") as store:
        assert store.count() == 2100 and store.schema.field("protocol_type").categories == ("icmp", "tcp", "udp")


def test_data_blockers_name_a_schema_mismatch_and_too_few_live_examples(tmp_path):
    from hamrah.device.eligibility import data_blockers

    with ExampleStore(tmp_path / "s.db", MOVIES) as store:
        store.append({"user": 1, "movie": 2, "genre": "drama", "liked": 1}, timestamp=0.0, ttl_s=10.0)
        assert data_blockers(store.schema, store.count(now=5.0), MOVIES) == []
        assert data_blockers(store.schema, store.count(now=50.0), MOVIES) == [
            "the example store has 0 live examples, the task needs at least 1"
        ]
        other = Schema((Field("x", "float32"),))
        assert data_blockers(store.schema, 1, other) == [
            f"the example store holds ({MOVIES.describe()}), the task expects (x: float32)"
        ]
    assert data_blockers(None, 0, other, min_examples=0) == [
        "the example store holds (no schema), the task expects (x: float32)"
    ]


junk = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.one_of(st.integers(0, 3), st.lists(st.integers(0, 3), max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.sampled_from(["drama", 1e300]),
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["user", "movie", "genre", "liked", "extra"]), junk, max_size=5))
def test_any_junk_record_is_stored_whole_or_refused_with_one_data_error(record):
    with ExampleStore(":memory:", MOVIES) as store:
        try:
            store.append(record)
        except DataError as e:
            assert "\n" not in str(e) and store.count() == 0
            return
        back = store.examples()
        assert store.count() == 1 and back.schema == MOVIES
        assert back["genre"][0] in (0, 1, 2) and back["user"][0] == np.int64(record["user"])


def test_store_import_from_npz_images_and_hf_folders(tmp_path, capsys):
    from PIL import Image

    np.savez(tmp_path / "d.npz", x_train=np.ones((3, 2), np.float32), y_train=np.array([0, 1, 1]))
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "n.db"),
                "--from",
                str(tmp_path / "d.npz"),
                "--split",
                "train",
            ]
        )
        == 0
    )
    for k, cls in enumerate(("cat", "dog")):
        (tmp_path / "img" / cls).mkdir(parents=True)
        Image.fromarray(np.full((2, 2, 3), k, np.uint8)).save(tmp_path / "img" / cls / "a.png")
    assert main(["store", "import", "--store", str(tmp_path / "i.db"), "--from", str(tmp_path / "img")]) == 0
    hf = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "hf_tiny"
    assert main(["store", "import", "--store", str(tmp_path / "h.db"), "--from", str(hf), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "imported 3 examples (x: float32[2], y: int64 (label))" in out
    assert "imported 2 examples (image: float32[3, 2, 2], label: int64{2 categories} (label))" in out
    with ExampleStore(tmp_path / "h.db") as store:
        assert store.count() == 3 and store.schema.field("label").categories == ("cat", "dog")
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "h.db"),
                "--from",
                str(hf),
                "--split",
                "train",
                "--format",
                "npz",
            ]
        )
        == 2
    )
    assert "not a readable .npz archive" in capsys.readouterr().err


def test_sites_importing_their_own_files_share_codes_through_a_schema_file(tmp_path, capsys):
    (tmp_path / "ref.csv").write_text("ward,age,sick\ncardio,50,1\nonco,40,0\northo,30,0\n")
    (tmp_path / "site_b.csv").write_text("ward,age,sick\northo,61,1\n")  # only one of the wards
    schema_file = tmp_path / "schema.json"
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "a.db"),
                "--from",
                str(tmp_path / "ref.csv"),
                "--label",
                "sick",
                "--save-schema",
                str(schema_file),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "b.db"),
                "--from",
                str(tmp_path / "site_b.csv"),
                "--schema",
                str(schema_file),
            ]
        )
        == 0
    )
    with ExampleStore(tmp_path / "a.db") as a, ExampleStore(tmp_path / "b.db") as b:
        assert a.schema == b.schema and b.examples()["ward"].tolist() == [2]  # 'ortho' is code 2 everywhere
    (tmp_path / "site_c.csv").write_text("ward,age,sick\nicu,61,1\n")
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "c.db"),
                "--from",
                str(tmp_path / "site_c.csv"),
                "--schema",
                str(schema_file),
            ]
        )
        == 2
    )
    assert "column 'ward': unknown category 'icu'" in capsys.readouterr().err
    assert (
        main(
            [
                "store",
                "import",
                "--store",
                str(tmp_path / "c.db"),
                "--from",
                str(tmp_path / "site_c.csv"),
                "--schema",
                str(tmp_path / "nope.json"),
            ]
        )
        == 2
    )
    assert "--schema" in capsys.readouterr().err and not (tmp_path / "c.db").exists()
