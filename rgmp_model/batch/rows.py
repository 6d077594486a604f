"""The rows of a batch: each row is one ``rgmp propagate`` (images, labels, out and its options).

Rows come from a manifest (:func:`read_manifest`: a CSV or YAML file with the columns ``images``,
``labels``, ``out`` and any option of ``rgmp propagate`` by name, e.g. ``reference-frame``,
``axis``, ``region``, ``checkpoint``, ``format``) or from two glob patterns paired by the part
their wildcards match (:func:`pair_by_name`). A row's options are parsed by ``rgmp propagate``'s
own parser (:func:`row_arguments`), so a batch row accepts exactly what the command accepts.
"""

from __future__ import annotations

import argparse
import csv
import glob
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["BatchRow", "option_actions", "option_names", "pair_by_name", "read_manifest", "row_arguments"]

PATH_COLUMNS = ("images", "labels", "out")
_TRUE, _FALSE = {"1", "true", "yes", "y", "on", "x"}, {"0", "false", "no", "n", "off", ""}


@dataclass(frozen=True)
class BatchRow:
    """One propagation: ``images``, ``labels`` and ``out`` as for ``rgmp propagate``, and its own
    ``options`` (option name -> value, e.g. ``{"reference-frame": 3, "region": "on"}``; names as
    on the command line, with ``-`` or ``_``), which win over the options given for all rows."""

    images: Path
    labels: Path
    out: Path
    options: tuple[tuple[str, Any], ...] | Mapping[str, Any] = field(default=())

    def __post_init__(self) -> None:
        for name in PATH_COLUMNS:
            object.__setattr__(self, name, Path(getattr(self, name)))
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple((_dest(str(k)), v) for k, v in pairs))


class _RowParser(argparse.ArgumentParser):
    """``rgmp propagate``'s parser whose errors are ValueErrors (a bad row is a message, not an exit)."""

    def error(self, message: str) -> Any:
        raise ValueError(message)


@lru_cache(maxsize=1)
def _propagate_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """The parser of ``rgmp propagate`` (the command's own, from :func:`add_propagate`) and its
    options by destination, IMAGES, --labels and --out left out."""
    from rgmp_model.cli_propagate import add_propagate

    parser = _RowParser(prog="rgmp", add_help=False)
    commands = parser.add_subparsers(dest="command")
    add_propagate(commands)
    actions = {a.dest: a for a in commands.choices["propagate"]._actions
               if a.option_strings and a.dest not in ("help", "labels", "out")}
    return parser, actions


def option_actions() -> dict[str, argparse.Action]:
    """The options a row may set, by destination: those of ``rgmp propagate`` but IMAGES, --labels
    and --out."""
    return dict(_propagate_parser()[1])


def option_names() -> list[str]:
    """The options a row may set, as named on the command line (``reference-frame``, ...)."""
    return [a.option_strings[-1].lstrip("-") for a in _propagate_parser()[1].values()]


def _dest(name: str) -> str:
    return name.strip().lstrip("-").replace("-", "_")


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _tokens(action: argparse.Action, value: Any) -> list[str]:
    """``--option=value`` (or the flag alone) for the parser; a flag takes true/false, yes/no, 1/0."""
    flag = action.option_strings[-1]
    if isinstance(value, bool) and action.choices and {"on", "off"} <= set(action.choices):
        value = "on" if value else "off"  # YAML reads a bare on/off as true/false
    if action.nargs == 0:  # store_true
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError(f"{flag} takes true or false, not {value!r}")
        return [flag] if text in _TRUE else []
    return [f"{flag}={value}"]


def _argv(images: Path, labels: Path, out: Path | None, options: Iterable[tuple[str, Any]]) -> list[str]:
    actions = _propagate_parser()[1]
    merged: dict[str, Any] = {}
    for name, value in options:
        dest = _dest(name)
        if dest not in actions:
            raise ValueError(f"unknown option {name!r}: a row takes the options of rgmp propagate: "
                             f"{', '.join(option_names())}")
        if not _unset(value):  # an empty cell keeps the option given for all rows
            merged[dest] = value
    argv = ["propagate", str(images), "--labels", str(labels)] + (["--out", str(out)] if out is not None else [])
    for dest, value in merged.items():
        argv += _tokens(actions[dest], value)
    return argv


def row_arguments(row: BatchRow, options: Mapping[str, Any] | None = None) -> argparse.Namespace:
    """The ``rgmp propagate`` arguments of ``row``: ``options`` (for all rows) overridden by the
    row's own, parsed by the command's parser. Raises ValueError naming a bad option or value."""
    shared = [(_dest(k), v) for k, v in (options or {}).items()]
    return _propagate_parser()[0].parse_args(_argv(row.images, row.labels, row.out, [*shared, *row.options]))


# ----------------------------------------------------------------------------------- manifests


def read_manifest(path: str | Path) -> list[BatchRow]:
    """The rows of a CSV (a header row, then one row per stack; lines starting with # skipped) or
    YAML (a list of mappings) manifest with the columns ``images``, ``labels``, ``out`` and any of
    :func:`option_names`. Relative paths are relative to the manifest's folder; an empty cell
    leaves the option as given for all rows."""
    manifest = Path(path).expanduser()
    if not manifest.is_file():
        raise FileNotFoundError(f"the manifest {manifest} does not exist: check the path")
    suffix = manifest.suffix.lower()
    if suffix in (".yaml", ".yml"):
        records = _yaml_records(manifest)
    elif suffix in (".csv", ".tsv", ".txt"):
        records = _csv_records(manifest, "\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"the manifest {manifest} must be a .csv, .tsv or .yaml file")
    if not records:
        raise ValueError(f"the manifest {manifest} has no rows")
    return [_manifest_row(record, manifest, n) for n, record in enumerate(records, 1)]


def _csv_records(manifest: Path, delimiter: str) -> list[dict[str, Any]]:
    with manifest.open(newline="", encoding="utf-8-sig") as file:
        lines = [line for line in file if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter=delimiter)
    records = [dict(r) for r in reader]
    if reader.fieldnames is None or not set(PATH_COLUMNS) <= {c.strip() for c in reader.fieldnames}:
        raise ValueError(f"the manifest {manifest} needs a header row with the columns images, labels, out "
                         f"(found: {', '.join(reader.fieldnames or [])})")
    return records


def _yaml_records(manifest: Path) -> list[dict[str, Any]]:
    import yaml

    records = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"the manifest {manifest} must be a list of rows, each a mapping with images, labels, "
                         "out and options (e.g. '- {images: a.tif, labels: a_labels.tif, out: a_rgmp.tif}')")
    return records


def _manifest_row(record: Mapping[str, Any], manifest: Path, n: int) -> BatchRow:
    cells = {str(k).strip(): v for k, v in record.items() if k is not None}
    missing = [c for c in PATH_COLUMNS if _unset(cells.get(c))]
    if missing:
        raise ValueError(f"row {n} of {manifest.name} has no {', '.join(missing)}: every row needs images, labels "
                         "and out")
    paths = {c: _relative_to(manifest.parent, cells.pop(c)) for c in PATH_COLUMNS}
    actions = _propagate_parser()[1]
    options = []
    for name, value in cells.items():
        action = actions.get(_dest(name))
        if action is None:
            raise ValueError(f"{manifest.name} has an unknown column {name!r}: the columns are images, labels, "
                             f"out and the options of rgmp propagate: {', '.join(option_names())}")
        if action.type is Path and not _unset(value):
            value = _relative_to(manifest.parent, value)
        options.append((name, value))
    return BatchRow(paths["images"], paths["labels"], paths["out"], tuple(options))


def _relative_to(folder: Path, value: Any) -> Path:
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else folder / path


# ----------------------------------------------------------------------------------- pairing


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching what ``glob(pattern)`` returns, one group per wildcard (*, ?, [..], **/)."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts, i = parts + ["((?:.*/)?)"], i + 3
        elif pattern.startswith("**", i):
            parts, i = parts + ["(.*)"], i + 2
        elif pattern[i] == "*":
            parts, i = parts + ["([^/]*)"], i + 1
        elif pattern[i] == "?":
            parts, i = parts + ["([^/])"], i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            parts, i = parts + ["([" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "])"], end + 1
        else:
            parts, i = parts + [re.escape(pattern[i])], i + 1
    return re.compile("".join(parts) + r"\Z")


def _by_key(pattern: str, paths: Sequence[str]) -> dict[str, Path]:
    regex = _wildcard_regex(pattern)
    found: dict[str, Path] = {}
    for path in paths:
        match = regex.match(path)
        key = "/".join(g.rstrip("/") for g in match.groups()) if match else Path(path).stem
        found.setdefault(key, Path(path))
    return found


def _listing(paths: Iterable[Path], limit: int = 5) -> str:
    names = [str(p) for p in paths]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def pair_by_name(images: str, labels: str, out_dir: str | Path,
                 options: Mapping[str, Any] | None = None) -> list[BatchRow]:
    """One row per file (or frame folder) matching the glob ``images``, with the file matching
    ``labels`` whose wildcards match the same text ('plate/*.tif' and 'plate/*_labels.tif' pair
    A01.tif with A01_labels.tif; files matching ``labels`` are not images). Each output is named
    by ``rgmp propagate``'s default (``<name>_rgmp.tif``, ``<name>_RES`` with format ctc) in
    ``out_dir``. Raises ValueError when a pattern matches nothing or a file has no partner."""
    label_paths = sorted(glob.glob(str(Path(labels).expanduser()), recursive=True))
    image_paths = sorted(set(glob.glob(str(Path(images).expanduser()), recursive=True)) - set(label_paths))
    for what, pattern, found in (("--images", images, image_paths), ("--labels", labels, label_paths)):
        if not found:
            raise ValueError(f"no files match {what} {pattern!r}" + (" (other than the labels)" if what == "--images"
                                                                    and label_paths else ""))
    by_image, by_label = _by_key(str(Path(images).expanduser()), image_paths), _by_key(
        str(Path(labels).expanduser()), label_paths)
    alone = [by_image[k] for k in by_image if k not in by_label]
    if alone:
        raise ValueError(f"{len(alone)} image(s) have no labels matching {labels!r} by name: {_listing(alone)}; "
                         "label them, or narrow --images")
    unused = [by_label[k] for k in by_label if k not in by_image]
    if unused:
        raise ValueError(f"{len(unused)} label file(s) have no image matching {images!r} by name: "
                         f"{_listing(unused)}; check the patterns")
    from rgmp_model.cli_propagate import output_path

    shared = [(_dest(k), v) for k, v in (options or {}).items()]
    rows = []
    for key, image in by_image.items():
        args = _propagate_parser()[0].parse_args(_argv(image, by_label[key], None, shared))
        rows.append(BatchRow(image, by_label[key], Path(out_dir).expanduser() / output_path(args)[0]))
    return rows
