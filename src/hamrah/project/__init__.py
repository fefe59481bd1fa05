"""``hamrah new``: scaffold a project that runs as generated (a task module, sample data, configs, a test).

A project is written from the templates in ``hamrah/project/templates`` (package data): ``common/``
(the configs, README and test every project has) and one folder per template (the task module and
what is specific to it). ``*.tmpl`` files are rendered (``{{name}}``, ``{{Class}}``, ``{{module}}``,
...) and lose the suffix; other files are copied as they are. The sample data is made here,
deterministically (a fixed seed), so two projects of one template hold the same bytes:

=========  ======================================================================================
template   task and sample data
=========  ======================================================================================
tabular    ``BinaryTask`` MLP; ``data/clients/site_{a,b,c}.csv`` (one client per file), ``data/test.csv``
image      ``ClassificationTask`` CNN; 16x16 grey PNGs of circles, squares and triangles in
           ``data/train/<class>/`` and ``data/test/<class>/`` (the image-folder loader)
text       ``NextTokenTask`` character GRU; ``data/clients/<client>/*.txt`` (Shakespeare's sonnets,
           public domain), ``data/test/*.txt``
=========  ======================================================================================

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     root = new_project("clinic", "tabular", d)
    ...     sorted(p.name for p in root.iterdir())
    ['README.md', 'clinic_task.py', 'data', 'device.toml', 'server.toml', 'sim.toml', 'test_clinic.py']
"""

from __future__ import annotations

import ast
import builtins
import csv
import keyword
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from hamrah.core.errors import ConfigError

__all__ = ["TEMPLATES", "check_name", "new_project"]

TEMPLATES = ("tabular", "image", "text")
TEMPLATE_ROOT = "templates"

# Per template: what the README and configs say that differs between them.
_KIND = {
    "tabular": {
        "kind": "BinaryTask",
        "kwargs": "{ hidden = 16 }",
        "partition": 'partition = "natural"  # one client per file in data/clients/',
        "num_clients": "num_clients = 0  # 0: every natural client (3 here)",
        "batch_size": "16",
        "lr": "0.1",
        "rounds": "10",
        "sites": "3",
        "device_import": "--from <this device's CSV> --schema runs/<run>/manifest.json  # the run's columns and codes",
    },
    "image": {
        "kind": "ClassificationTask",
        "kwargs": "{ channels = 8 }",
        "partition": 'partition = "iid"  # the training images spread evenly over the clients',
        "num_clients": "num_clients = 3",
        "batch_size": "10",
        "lr": "0.1",
        "rounds": "20",
        "sites": "3",
        "device_import": "--from <this device's image folder, one folder per class> --image-size 16x16 "
        "--image-mode L --schema runs/<run>/manifest.json  # the run's class codes",
    },
    "text": {
        "kind": "NextTokenTask",
        "kwargs": "{ seq_len = 32, hidden = 64 }",
        "partition": 'partition = "natural"  # one client per folder in data/clients/',
        "num_clients": "num_clients = 0  # 0: every natural client (3 here)",
        "batch_size": "8",
        "lr": "1.0",
        "rounds": "10",
        "sites": "3",
        "device_import": "--config device.toml --from <this device's folder of .txt files>  # the task's local_data",
    },
}


def check_name(name: str) -> str:
    """Return the Python name of project ``name`` (dashes become underscores).

    Raises:
        ConfigError: the name is not a Python identifier once dashes become underscores, or is a keyword.
    """
    ident = name.replace("-", "_")
    if not ident.isidentifier() or keyword.iskeyword(ident) or not ident.isascii():
        raise ConfigError(
            f"project name {name!r}: expected a Python identifier once dashes become underscores "
            "(letters, digits, _ and -, not starting with a digit, not a Python keyword), e.g. my-clinic"
        )
    return ident


def _class_name(ident: str, taken: set[str] = frozenset()) -> str:
    """The task class's name: ``ident`` in CamelCase, with ``Task`` added when that would be a keyword
    (``none`` -> ``None``) or shadow a name in ``taken`` (``path`` -> ``Path``, ``dataset`` -> ``Dataset``)."""
    name = "".join(part[:1].upper() + part[1:] for part in ident.split("_") if part) or "Task"
    while keyword.iskeyword(name) or name in taken:
        name += "Task"
    return name


_PLACEHOLDER_CLASS = "HamrahProjectClassPlaceholder"


def _names_in_use(template: str, values: dict[str, str]) -> set[str]:
    """Every name the project's Python (its modules and its README's snippets) binds or reads, and the
    builtins: a task class of one of these names would shadow it and break the project."""
    root = resources.files("hamrah.project").joinpath(TEMPLATE_ROOT)
    values = {**values, "Class": _PLACEHOLDER_CLASS, "serve": ""}
    sources = []
    for folder in ("common", template):
        for item in root.joinpath(folder).iterdir():
            if item.name.endswith(".py.tmpl"):
                sources.append(_render(item.read_text(encoding="utf-8"), values))
            elif item.name.endswith(".md.tmpl"):
                text = _render(item.read_text(encoding="utf-8"), values)
                sources += re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    names = set(dir(builtins))
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return names - {_PLACEHOLDER_CLASS}


def new_project(name: str, template: str, directory: str | os.PathLike = ".") -> Path:
    """Write project ``name`` from ``template`` into ``directory/name`` and return its folder.

    Everything is written into a temporary sibling folder first and renamed into place at the end,
    so a failure leaves nothing behind.

    Raises:
        ConfigError: an invalid name, an unknown template, or a target folder that exists and is not
            empty (nothing is written).
    """
    ident = check_name(name)
    if template not in TEMPLATES:
        raise ConfigError(f"template {template!r}: expected one of {', '.join(TEMPLATES)}")
    target = Path(directory) / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty; choose another name or --dir")
    values = {
        "project": name,
        "name": ident,
        "module": f"{ident}_task",
        "template": template,
        **_KIND[template],
    }
    values["Class"] = _class_name(ident, _names_in_use(template, values))
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent))
    try:
        root = resources.files("hamrah.project").joinpath(TEMPLATE_ROOT)
        values["serve"] = _render(root.joinpath("common", "_serve.md").read_text(encoding="utf-8"), values)
        _copy_tree(root.joinpath("common"), staging, values)
        _copy_tree(root.joinpath(template), staging, values)
        _SAMPLE_DATA[template](staging / "data")
        if target.exists():
            target.rmdir()  # empty (checked above)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise AssertionError(f"unrendered placeholder in a template: {text[text.index('{{') :][:40]!r}")
    return text


def _copy_tree(src, dest: Path, values: dict[str, str]) -> None:
    """Copy template folder ``src`` (an importlib Traversable) into ``dest``, rendering ``*.tmpl`` files."""
    for item in sorted(src.iterdir(), key=lambda t: t.name):
        if item.name.startswith((".", "_")):  # _*.md: fragments rendered into other templates
            continue
        out_name = item.name.replace("NAME", values["name"])
        if item.is_dir():
            (dest / out_name).mkdir(exist_ok=True)
            _copy_tree(item, dest / out_name, values)
        elif out_name.endswith(".tmpl"):
            text = _render(item.read_text(encoding="utf-8"), values)
            (dest / out_name[: -len(".tmpl")]).write_text(text, encoding="utf-8")
        else:
            (dest / out_name).write_bytes(item.read_bytes())


# ---- sample data, made deterministically ----

FEATURES = tuple(f"feature_{i}" for i in range(1, 7))


def tabular_data(folder: Path, seed: int = 0) -> None:
    """Write three clients' CSV files (100 rows each) and a test file (90 rows).

    The label is 1 when a fixed linear score of the six features plus logistic noise is positive; each
    client's features are drawn around another mean, so the clients' label balances differ (not IID).
    """
    rng = np.random.default_rng(seed)
    weights = np.array([1.5, -1.0, 0.8, 0.0, 0.6, -0.4])

    def rows(n: int, shift: float) -> list[list[str]]:
        x = rng.normal(shift, 1.0, (n, len(FEATURES)))
        y = (x @ weights + rng.logistic(0.0, 0.5, n)) > 0
        return [[f"{v:.4f}" for v in xi] + [str(int(yi))] for xi, yi in zip(x, y)]

    (folder / "clients").mkdir(parents=True)
    for site, shift in (("site_a", -0.5), ("site_b", 0.0), ("site_c", 0.5)):
        _write_csv(folder / "clients" / f"{site}.csv", rows(100, shift))
    _write_csv(folder / "test.csv", rows(90, 0.0))


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*FEATURES, "label"])
        w.writerows(rows)


SHAPES = ("circle", "square", "triangle")


def image_data(folder: Path, seed: int = 0, size: int = 16, per_class: tuple[int, int] = (30, 10)) -> None:
    """Write 16x16 grey PNGs of circles, squares and triangles (random place, size, brightness, noise):
    ``train/<class>/`` (30 per class) and ``test/<class>/`` (10 per class)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for shape in SHAPES:
            (folder / split / shape).mkdir(parents=True)
            for i in range(count):
                img = Image.new("L", (size, size), int(rng.integers(0, 60)))
                draw = ImageDraw.Draw(img)
                r = int(rng.integers(4, 8))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                fill = int(rng.integers(170, 256))
                box = (cx - r, cy - r, cx + r, cy + r)
                if shape == "circle":
                    draw.ellipse(box, fill=fill)
                elif shape == "square":
                    draw.rectangle(box, fill=fill)
                else:
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
                pixels = np.asarray(img, dtype=np.int16) + rng.integers(-16, 17, (size, size))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(
                    folder / split / shape / f"{i:03d}.png"
                )


def text_data(folder: Path) -> None:
    """Nothing to make: the text template's sample files are package data (copied with the template)."""
    if not (folder / "clients").is_dir():
        raise AssertionError(f"{folder}: the text template's sample files are missing from the package")


_SAMPLE_DATA = {"tabular": tabular_data, "image": image_data, "text": text_data}
