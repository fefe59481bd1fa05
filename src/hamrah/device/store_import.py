"""Fill an Example Store from the user's data: ``hamrah store import --store PATH --from FILE_OR_DIR``.

Any loader of :mod:`hamrah.data.loaders` (CSV, Parquet, ``.npz``, an image folder, a Hugging Face
folder) can fill a store. The write is one transaction: a new store appears only once complete
(written as ``PATH.partial``, then renamed); an existing store either takes every record (its
schema must match) or none.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hamrah.core.errors import DataError
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
    from hamrah.device.store import ExampleStore

    path = Path(path)
    columns = dict(examples.fields)
    if path.exists():
        with ExampleStore(path, examples.schema) as store:
            return store.append_many(columns, ttl_s=ttl_s, progress=progress)
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        with ExampleStore(tmp, examples.schema) as store:
            n = store.append_many(columns, ttl_s=ttl_s, progress=progress)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return n


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
    """Read a schema JSON file (``--schema``: e.g. written by ``--save-schema`` on a reference file)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--schema {path}: cannot read the schema file ({e})") from None
    return Schema.from_json(text, f"--schema {path}")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in text.split(",") if c.strip()) if text else None


def import_command(args: argparse.Namespace, out: TextIO) -> str:
    """Run ``hamrah store import --from``; write progress to ``out``; return the summary line.

    With ``--schema PATH`` the data is read under that schema (a task's: every device then shares
    its columns and category codes); ``--save-schema PATH`` writes the imported data's schema as JSON.

    Raises:
        DataError: a bad source, option or store (one line, nothing written).
    """
    spec = SourceSpec(
        args.format,
        args.label,
        _names(args.features),
        args.client_column,
        args.split,
        args.missing,
        _names(args.columns),
    )
    schema = _read_schema(args.schema) if getattr(args, "schema", None) else None
    examples = load_examples(args.source, spec, schema)
    if args.group is not None:
        examples = select_group(examples, args.group)
    total = len(examples)
    if total == 0:
        raise DataError(f"{args.source}: no examples to import")

    def progress(done: int) -> None:
        if total > 10_000:
            out.write(f"\rimporting into {args.out}: {done:,} / {total:,} examples")
            out.flush()

    n = fill_store(args.out, examples, ttl_s=args.ttl, progress=progress)
    if total > 10_000:
        out.write("\n")
    if getattr(args, "save_schema", None):
        try:
            Path(args.save_schema).write_text(examples.schema.to_json() + "\n")
        except OSError as e:
            raise DataError(
                f"{args.out}: imported {n:,} examples, but --save-schema {args.save_schema} could not be written ({e})"
            ) from None
    return f"{args.out}: imported {n:,} examples ({examples.schema.describe()})"
