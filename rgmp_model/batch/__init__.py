"""Many stacks, many machines: a plate of time-lapses, one ``rgmp propagate`` per row, run as tasks
on a Dask cluster (``rgmp batch``). Resumable (complete outputs are skipped), isolated (a failing
row does not stop the others) and reported (a table, CSV and JSON).

- :mod:`~rgmp_model.batch.rows`: the rows, from a manifest or two glob patterns;
- :mod:`~rgmp_model.batch.checks`: every row checked before any work, by ``rgmp propagate``'s rules;
- :mod:`~rgmp_model.batch.worker`: one row on a worker, into a partial output renamed when complete;
- :mod:`~rgmp_model.batch.runner`: the rows on a ``Client``, a local cluster;
- :mod:`~rgmp_model.batch.report`: the table and the CSV / JSON report.

``dask.distributed`` is imported only when a batch runs (the ``batch`` extra).
"""

from rgmp_model.batch.checks import CheckedRow, check_rows, output_complete, partial_path
from rgmp_model.batch.report import BatchReport, ReportRow
from rgmp_model.batch.rows import BatchRow, pair_by_name, read_manifest, row_arguments
from rgmp_model.batch.runner import local_cluster, require_distributed, run_batch, run_checked
from rgmp_model.batch.worker import RowResult, RowSettings, run_row

__all__ = [
    "BatchReport", "BatchRow", "CheckedRow", "ReportRow", "RowResult", "RowSettings", "check_rows", "local_cluster",
    "output_complete", "pair_by_name", "partial_path", "read_manifest", "require_distributed", "row_arguments",
    "run_batch", "run_checked", "run_row",
]
