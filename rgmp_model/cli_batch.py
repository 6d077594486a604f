"""``rgmp batch``: many stacks, each one ``rgmp propagate``, as tasks on a Dask cluster
(:mod:`rgmp_model.batch`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Runs one 'rgmp propagate' per row on a Dask cluster: a local one (--workers N processes) or an "
    "existing one (--scheduler ADDRESS, e.g. SLURM through dask-jobqueue). Rows come from MANIFEST, a "
    "CSV or YAML file with the columns images, labels, out and any option of rgmp propagate by name "
    "(reference-frame, axis, region, checkpoint, format, ...; relative paths from the manifest's folder), "
    "or from --images and --labels glob patterns paired by the text their wildcards match, written to "
    "--out-dir. Every row is checked before any work starts. Each row is written under a .partial name "
    "and renamed into place when complete: a row whose output exists is skipped, so running the same "
    "command again resumes. A failing row does not stop the others; Ctrl-C stops the rows at work "
    "between two frames and keeps their frames done in their .partial outputs. At the end: a table, a "
    "CSV and JSON report, and exit status 1 when a row failed (130 after Ctrl-C). The options below "
    "(as for rgmp propagate) apply to every row; a manifest's columns win."
)

EPILOG = """examples:
  rgmp batch --images 'plate/*.tif' --labels 'plate/*_labels.tif' --out-dir results/ --workers 2
  rgmp batch plate.csv --checkpoint model.pt --direction forward
  rgmp batch plate.yaml --scheduler tcp://10.0.0.5:8786     # an existing cluster (docs/batch.md)
"""


def add_batch(commands: argparse._SubParsersAction) -> None:
    """The ``batch`` sub-command and its options (those of ``rgmp propagate`` included)."""
    from rgmp_model.cli_propagate import add_propagate_options

    p = commands.add_parser("batch", help="propagate many stacks (a plate) on a Dask cluster, resumable",
                            description=textwrap.fill(DESCRIPTION, 100), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", type=Path, nargs="?", default=None,
                   help="CSV or YAML: columns images, labels, out, and per-row options")
    p.add_argument("--images", default=None, metavar="GLOB", help="the stacks, e.g. 'plate/*.tif' (quoted)")
    p.add_argument("--labels", default=None, metavar="GLOB",
                   help="their labels, paired by name, e.g. 'plate/*_labels.tif' (quoted)")
    p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                   help="where the outputs go with --images/--labels (named as rgmp propagate names them)")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="a local cluster of N worker processes (default: one per GPU, else one per CPU, at "
                         "most one per 2 GB of memory)")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="the scheduler of an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="torch threads per row (default: the CPUs a worker may use shared between the task "
                   "threads of the workers on them)")
    p.add_argument("--report", type=Path, default=None, metavar="PATH",
                   help="the report, written as PATH.csv and PATH.json (default: <manifest>_report, or "
                   "rgmp_batch_report in --out-dir)")
    add_propagate_options(p, out=False)
    p.set_defaults(run=run_batch_command)


def _shared_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``rgmp propagate`` options given on the command line (those not at their default)."""
    from rgmp_model.batch.rows import option_actions

    return {dest: getattr(args, dest) for dest, action in option_actions().items()
            if getattr(args, dest, action.default) != action.default}


def _rows(args: argparse.Namespace, options: dict[str, Any]) -> tuple[list[Any], Path]:
    """The rows and the report's path (without suffix), from MANIFEST or the patterns."""
    from rgmp_model.batch.rows import pair_by_name, read_manifest

    patterns = (args.images, args.labels, args.out_dir)
    if args.manifest is not None:
        if any(p is not None for p in patterns):
            raise ValueError("give either MANIFEST or --images, --labels and --out-dir, not both")
        manifest = args.manifest.expanduser()
        return read_manifest(manifest), args.report or manifest.with_name(f"{manifest.stem}_report")
    if any(p is None for p in patterns):
        raise ValueError("give a MANIFEST (CSV or YAML), or --images GLOB --labels GLOB --out-dir DIR")
    return pair_by_name(args.images, args.labels, args.out_dir, options), args.report or args.out_dir / "rgmp_batch_report"


def _client(args: argparse.Namespace, to_run: int) -> Any:
    """The cluster's client: --scheduler's, else a local cluster of --workers (none when no row runs)."""
    from rgmp_model.batch.runner import local_cluster

    if to_run == 0:
        return contextlib.nullcontext(None)
    if args.scheduler is not None:
        from distributed import Client

        return Client(args.scheduler)
    return local_cluster(args.workers)


def run_batch_command(args: argparse.Namespace) -> int:
    """Check every row, run them on the cluster, print the table and write the report. Exit 0
    when no row failed, 1 when one did, 130 after Ctrl-C."""
    from rgmp_model.batch.checks import check_rows
    from rgmp_model.batch.runner import (
        require_distributed,
        run_checked,
        torch_threads_per_worker,
        workers_with_slow_malloc,
    )
    from rgmp_model.cli_errors import EXIT_ERROR, EXIT_INTERRUPTED
    from rgmp_model.io.outputs import check_not_input

    require_distributed()
    for name in ("workers", "torch_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    options = _shared_options(args)
    rows, report_path = _rows(args, options)
    checked = check_rows(rows, options)
    for suffix in (".csv", ".json"):
        check_not_input(report_path.with_suffix(suffix), [p for r in checked for p in (r.row.images, r.row.labels)],
                        "--report")
    to_run = sum(not r.complete for r in checked)
    print(f"{len(checked)} rows checked: {to_run} to run, {len(checked) - to_run} complete already (skipped)")
    with _client(args, to_run) as client:
        if client is not None:
            threads = torch_threads_per_worker(client)
            counts = sorted(set(threads.values())) if args.torch_threads is None else [args.torch_threads]
            print(f"{'local' if args.scheduler is None else args.scheduler} cluster: {len(threads)} worker(s), "
                  f"{'/'.join(map(str, counts))} torch thread(s) per row")
            slow = workers_with_slow_malloc(client)
            if slow:
                print(f"rgmp batch: note: {len(slow)} worker(s) run with MALLOC_TRIM_THRESHOLD_ set (Dask's default), "
                      "which makes rows about half as fast on the CPU: see docs/batch.md to start workers without it",
                      file=sys.stderr)
        report = run_checked(client, checked, torch_threads=args.torch_threads)
    table = report.table()
    if table:
        print(table)
    csv_path, json_path = report.write(report_path)
    print(f"{report.summary()}; report -> {csv_path}, {json_path}")
    if report.interrupted:
        print("rgmp batch: interrupted (Ctrl-C): run the same command again to finish the rows not done "
              "(complete outputs are skipped)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR if report.failed else 0
