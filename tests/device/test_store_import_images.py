"""``hamrah store import --from IMAGES --image-size HxW --image-mode L``: a device's images read the way
an image task reads them (its size and channels), so the store matches the task's schema."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hamrah.cli import main
from hamrah.device.store import ExampleStore


def _images(root, sizes):
    for i, (cls, (h, w)) in enumerate(sizes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        rgb = (np.random.default_rng(i).random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / cls / f"{i}.png")


def test_images_of_any_size_import_at_the_task_size_and_mode(tmp_path, capsys):
    _images(tmp_path / "imgs", [("cat", (5, 7)), ("dog", (9, 4)), ("cat", (6, 6))])
    store = tmp_path / "s.db"
    argv = ["store", "import", "--from", str(tmp_path / "imgs"), "--store", str(store)]
    assert main([*argv, "--image-size", "4x3", "--image-mode", "L"]) == 0
    with ExampleStore(store) as s:
        field = s.schema.field("image")
        assert field.shape == (1, 4, 3) and s.count() == 3


@pytest.mark.parametrize("size", ["4", "4x", "0x3", "axb", "4x3x2"])
def test_a_bad_image_size_is_one_line(tmp_path, capsys, size):
    _images(tmp_path / "imgs", [("cat", (5, 5))])
    argv = ["store", "import", "--from", str(tmp_path / "imgs"), "--store", str(tmp_path / "s.db")]
    assert main([*argv, "--image-size", size]) == 2
    assert f"--image-size {size}: expected HEIGHTxWIDTH" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_a_site_missing_classes_gets_the_runs_codes_from_its_manifest(tmp_path, capsys):
    """A device whose folder holds only 'dog' images imports them under the run's schema (the manifest's):
    'dog' keeps the code the training set gave it, not 0."""
    import json

    from hamrah.data.schema import Field, Schema

    schema = Schema(
        (Field("image", "float32", (1, 4, 3)), Field("label", "int64", categories=("cat", "dog", "fish"))),
        label="label",
    )
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"task": "pets", "schema": json.loads(schema.to_json())}))
    _images(tmp_path / "site", [("dog", (5, 5)), ("dog", (6, 4))])
    store = tmp_path / "s.db"
    argv = ["store", "import", "--from", str(tmp_path / "site"), "--store", str(store), "--schema", str(manifest)]
    assert main([*argv, "--image-size", "4x3", "--image-mode", "L"]) == 0
    with ExampleStore(store) as s:
        labels = s.examples().labels.tolist()
    assert labels == [1, 1]
