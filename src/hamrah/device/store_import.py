"""Fill an Example Store from the user's data: ``hamrah store import --store PATH --from FILE_OR_DIR``.

Any loader of :mod:`hamrah.data.loaders` (CSV, Parquet, ``.npz``, an image folder, a Hugging Face
folder) can fill a store. The write is one transaction: a new store appears only once complete
(written as ``PATH.partial``, then renamed); an existing store either takes every record (its
schema must match) or none.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.files import check_writable_file
from hamrah.data.loaders import SourceSpec, load_examples
from hamrah.data.schema import Schema

if TYPE_CHECKING:
    from hamrah.data.examples import Examples


def fill_store(
    path: str | Path, examples: Examples, ttl_s: float | None = None, progress: Callable[[int], None] | None = None
) -> int:
    """Write ``examples`` into the store at ``path`` (new, or existing with the same schema).

    Args:
        path: the store file.
        examples: the records to add, under their schema.
        ttl_s: seconds until they expire (None: never).
        progress: called with the count written so far, every 10,000 records.

    Returns:
        The number of records added.

    Raises:
        DataError: an existing store of another schema, or records that do not fit; nothing written.
    """
    from hamrah.device.store import ExampleStore, check_ttl, new_store

    path = Path(path)
    columns = dict(examples.fields)
    check_ttl(ttl_s)
    with ExampleStore(path, examples.schema) if path.exists() else new_store(path, examples.schema) as store:
        return store.append_many(columns, ttl_s=ttl_s, progress=progress)


def select_group(examples: Examples, group: str) -> Examples:
    """Return the examples of one natural client (a file's stem, a client-id value).

    Raises:
        DataError: the examples have no natural clients, or none called ``group`` (lists some).
    """
    if examples.groups is None or examples.group_names is None:
        raise DataError(
            f"{examples.source}: --group {group!r}, but the data has no natural clients "
            "(load several files, or name a --client-column)"
        )
    if group not in examples.group_names:
        names = examples.group_names
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise DataError(f"{examples.source}: no client {group!r} (clients: {shown})")
    gid = examples.group_names.index(group)
    return examples.take((examples.groups == gid).nonzero()[0])


def _read_schema(path: str) -> Schema:
    """Read ``--schema``: a schema JSON file (e.g. written by ``--save-schema`` on a reference file), or
    a run's ``manifest.json``, whose ``schema`` is its training data's (every device then gets the
    run's columns and category codes)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--schema {path}: cannot read the schema file ({e})") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the stack: Schema.from_json says so
        doc = None
    if isinstance(doc, dict) and "task" in doc and "schema" in doc:  # a run's manifest
        if doc["schema"] is None:
            raise DataError(f"--schema {path}: this run's manifest holds no schema (its data was not Examples)")
        text = json.dumps(doc["schema"])
    return Schema.from_json(text, f"--schema {path}")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in text.split(",") if c.strip()) if text else None


def _image_size(text: str | None) -> tuple[int, int] | None:
    """``--image-size HEIGHTxWIDTH`` as a pair of positive integers."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--image-size {text}: expected HEIGHTxWIDTH in pixels, e.g. 16x16")
    return int(parts[0]), int(parts[1])


def _check_schema_path(path: str, store: str, source: str) -> None:
    """Refuse a ``--save-schema`` path that cannot be written, or that is the store or the data (it would
    replace them once the import is done), before anything is imported."""
    check_writable_file(path, "--save-schema")
    if not Path(path).parent.is_dir():
        raise ConfigError(f"--save-schema {path}: no folder {Path(path).parent}; expected a file in an existing folder")
    for flag, other in (("--store", store), ("--from", source)):
        if Path(other).resolve() == Path(path).resolve():
            raise ConfigError(f"--save-schema {path}: is also the {flag} file; expected another file for the schema")


def _live_count(path: str | Path) -> int | None:
    """Return the live records of an existing store (None: no store there yet)."""
    from hamrah.device.store import ExampleStore

    if not Path(path).exists():
        return None
    with ExampleStore(path) as store:
        return store.count()


class _Progress:
    """The progress of an import of ``total`` records (silent up to 10,000): on a terminal one line
    redrawn in place, elsewhere (a log file) only the final line."""

    def __init__(self, out: TextIO, store: str, total: int):
        self.out, self.store, self.total = out, store, total
        self.tty, self.open = hasattr(out, "isatty") and out.isatty(), False

    def __call__(self, done: int) -> None:
        if self.total <= 10_000 or not (self.tty or done == self.total):
            return
        line, last = f"importing into {self.store}: {done:,} / {self.total:,} examples", done == self.total
        self.out.write((f"\r{line}" + ("\n" if last else "")) if self.tty else line + "\n")
        self.out.flush()
        self.open = self.tty and not last

    def end_line(self) -> None:
        """End a half-drawn terminal line (before an error is printed)."""
        if self.open:
            self.out.write("\n")


def import_command(args: argparse.Namespace, out: TextIO) -> str:
    """Run ``hamrah store import --from``; write progress to ``out``; return the summary line.

    With ``--schema PATH`` the data is read under that schema (a task's: every device then shares
    its columns and category codes); ``--save-schema PATH`` writes the imported data's schema as JSON.
    An existing store of the same schema takes the records beside those it holds (the line says how
    many it held before).

    Raises:
        DataError, ConfigError: a bad source, option, store or output path (one line, nothing written;
            the paths and ``--ttl`` are checked before the data is read).
    """
    from hamrah.device.store import check_ttl

    check_ttl(args.ttl, "--ttl")
    check_writable_file(args.out, "--store")
    save_schema = getattr(args, "save_schema", None)
    if save_schema:
        _check_schema_path(save_schema, args.out, args.source)
    spec = SourceSpec(
        args.format,
        args.label,
        _names(args.features),
        args.client_column,
        args.split,
        args.missing,
        _names(args.columns),
        _image_size(getattr(args, "image_size", None)),
        getattr(args, "image_mode", "RGB"),
    )
    schema = _read_schema(args.schema) if getattr(args, "schema", None) else None
    examples = load_examples(args.source, spec, schema)
    if args.group is not None:
        examples = select_group(examples, args.group)
    total = len(examples)
    if total == 0:
        raise DataError(f"{args.source}: no examples to import")
    before = _live_count(args.out)
    progress = _Progress(out, args.out, total)
    try:
        n = fill_store(args.out, examples, ttl_s=args.ttl, progress=progress)
    except BaseException:
        progress.end_line()
        raise
    if save_schema:
        from hamrah.transport.identity import write_private  # all or nothing

        try:
            write_private(save_schema, (examples.schema.to_json() + "\n").encode())
        except OSError as e:
            raise DataError(
                f"{args.out}: imported {n:,} examples, but --save-schema {save_schema} could not be written ({e})"
            ) from None
    line = f"{args.out}: imported {n:,} examples ({examples.schema.describe()})"
    return line if before is None else f"{line}; the store held {before:,} before, {before + n:,} now"
