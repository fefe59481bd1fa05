"""The bundled vertical splits and the party CSV reader."""

from __future__ import annotations

import numpy as np
import pytest

from hamrah.core.errors import DataError
from hamrah.data.vertical import load_vertical, read_party_csv


def test_bundled_splits_share_their_ids():
    d = load_vertical("breast")
    assert d["guest"].features.shape == (569, 10) and d["host"].features.shape == (569, 20)
    assert set(d["guest"].ids) == set(d["host"].ids) and set(np.unique(d["guest"].labels)) == {0.0, 1.0}
    host = d["host"].select(d["guest"].ids)
    assert np.array_equal(host.ids, d["guest"].ids)


def test_bad_files_name_the_problem(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,x0\n1,0.5\n1,0.7\n")
    with pytest.raises(DataError, match="unique integer ids"):
        read_party_csv(f)
    f.write_text("id,x0\n1,abc\n")
    with pytest.raises(DataError, match="expected numbers"):
        read_party_csv(f)
    with pytest.raises(DataError, match="no column 'y'"):
        read_party_csv(f, label_column="y")
    with pytest.raises(DataError, match="unknown vertical data set"):
        load_vertical("iris")
    with pytest.raises(DataError, match="not in this table"):
        load_vertical("breast")["host"].select(np.array([-5]))


def test_checksum_mismatch_is_refused(tmp_path):
    import gzip

    (tmp_path / "breast_hetero_guest.csv.gz").write_bytes(gzip.compress(b"id,y,x0\n1,0,0.5\n"))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_vertical("breast", tmp_path)
