"""What a batch did, row by row: the table printed at the end and the CSV / JSON report."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from rgmp_model.batch.checks import CheckedRow
from rgmp_model.batch.worker import STATUSES, RowResult

__all__ = ["BatchReport", "ReportRow"]

FIELDS = ("row", "status", "images", "labels", "out", "frames", "seconds", "peak_memory_mb", "peak_gpu_mb",
          "worker", "message", "notes")
TABLE_ROWS = 40  # above this many rows the table lists only the rows that did not finish


@dataclass(frozen=True)
class ReportRow:
    """One row of the report: the row's files and how it ended (:class:`RowResult`)."""

    row: int
    status: str
    images: str
    labels: str
    out: str
    frames: int
    seconds: float
    peak_memory_mb: float | None
    peak_gpu_mb: float | None
    worker: str
    message: str
    notes: str

    @classmethod
    def of(cls, checked: CheckedRow, result: RowResult) -> ReportRow:
        def mb(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return cls(checked.number, result.status, str(checked.row.images), str(checked.row.labels),
                   str(checked.out), result.frames, round(result.seconds, 2), mb(result.peak_memory_mb),
                   mb(result.peak_gpu_mb), result.worker, result.message, "; ".join(result.notes))


@dataclass(frozen=True)
class BatchReport:
    """Every row's outcome, in the rows' order."""

    rows: tuple[ReportRow, ...]

    def counts(self) -> dict[str, int]:
        """Rows per status (every status of ``STATUSES``, zeros included)."""
        found = Counter(r.status for r in self.rows)
        return {status: found[status] for status in STATUSES}

    @property
    def failed(self) -> list[ReportRow]:
        return [r for r in self.rows if r.status == "failed"]

    @property
    def interrupted(self) -> bool:
        return any(r.status in ("interrupted", "not run") for r in self.rows)

    def summary(self) -> str:
        """``16 rows: 14 done, 1 skipped, 1 failed`` (statuses with no row left out)."""
        parts = [f"{n} {status}" for status, n in self.counts().items() if n]
        return f"{len(self.rows)} rows: {', '.join(parts)}"

    def table(self, all_rows: bool | None = None) -> str:
        """A text table: row, status, frames, seconds, output and message; every row when there are
        at most ``TABLE_ROWS`` (or ``all_rows``), else the rows that did not finish."""
        show_all = len(self.rows) <= TABLE_ROWS if all_rows is None else all_rows
        rows = self.rows if show_all else [r for r in self.rows if r.status not in ("done", "skipped")]
        lines = [("row", "status", "frames", "seconds", "out", "message")]
        lines += [(str(r.row), r.status, str(r.frames) if r.status != "skipped" else "-",
                   f"{r.seconds:.1f}" if r.status in ("done", "failed", "interrupted") else "-", r.out, r.message)
                  for r in rows]
        widths = [max(len(line[i]) for line in lines) for i in range(5)]
        text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line[:5], widths)) + "  " + line[5]
                         for line in lines)
        if not show_all:
            text = f"(done and skipped rows are in the report)\n{text}" if rows else ""
        return text.rstrip()

    def write(self, path: str | Path) -> tuple[Path, Path]:
        """Write the report as ``path`` with the suffixes .csv and .json; returns both paths."""
        base = Path(path).expanduser()
        base.parent.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = base.with_suffix(".csv"), base.with_suffix(".json")
        with csv_path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=FIELDS)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: "" if v is None else v for k, v in asdict(r).items()})
        json_path.write_text(json.dumps({"summary": self.counts(), "rows": [asdict(r) for r in self.rows]},
                                        indent=1) + "\n", encoding="utf-8")
        return csv_path, json_path
