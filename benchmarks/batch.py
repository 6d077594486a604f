"""``rgmp batch`` scaling: a plate of synthetic time-lapses on 1 and 2 local Dask workers.

    python benchmarks/batch.py                                  # 16 stacks, the default model, CPU
    python benchmarks/batch.py --torch-threads 1                # one torch thread per row everywhere
    python benchmarks/batch.py --torch-threads 1 --workers 1 --dask-malloc   # also with Dask's malloc setting
    python benchmarks/batch.py --stacks 4 --frames 6 --checkpoint tiny.pt   # a quick check

The plate: ``--stacks`` uint16 time-lapses of moving cells (rgmp_model.data.synthetic_microscopy,
``--frames`` frames of ``--size`` px, seeds 1..N), each with the labels of its frame 0, written
as TIFFs into a temporary folder and paired by name (``rgmp_model.batch.pair_by_name``), as
``rgmp batch --images 'plate/*.tif' --labels 'plate/*_labels.tif'`` pairs them.

Rows of the table:
  - sequential: one process runs ``rgmp propagate`` on each stack in turn (what a user does
    without ``rgmp batch``), with torch's threads as this process has them (or --torch-threads);
  - Dask, N worker(s): ``rgmp_model.batch.run_batch`` on a local cluster of N worker processes,
    the machine's CPUs shared between them (torch threads per row = CPUs // N, or --torch-threads).
With --dask-malloc each Dask setup also runs with the workers' environment as Dask sets it
(MALLOC_TRIM_THRESHOLD_=65536, which rgmp_model.batch.local_cluster leaves out).
The load average before each setup is printed: other processes on the machine slow the setups
that use more torch threads than they have CPUs to themselves (torch's threads wait for each other).
Wall time counts the rows only: the cluster's start and each worker's first model load are timed
apart (workers load the model before the rows start). Peak memory per row: the resident memory of
the process running the row, at its highest while the row ran (sampled every 20 ms), the model
and the Python runtime included. The outputs of every setup are compared byte for byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_plate(folder: Path, stacks: int, frames: int, size: int) -> None:
    """``stacks`` synthetic time-lapses ``W01.tif``... and their frame-0 labels ``W01_labels.tif``."""
    import tifffile

    from rgmp_model.data.synthetic_microscopy import synthetic_microscopy

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, stacks + 1):
        sequence = synthetic_microscopy(num_frames=frames, height=size, width=size, num_cells=6, seed=i)
        tifffile.imwrite(folder / f"W{i:02d}.tif", np.asarray(sequence.frames), photometric="minisblack")
        tifffile.imwrite(folder / f"W{i:02d}_labels.tif", sequence.labels[0].astype(np.uint16))


def sequential(rows: list, options: dict) -> tuple[float, list[float], list[float]]:
    """Each row by ``rgmp propagate`` in this process, in turn: (wall s, each row's seconds, each
    row's peak RSS MB)."""
    import contextlib
    import io

    from rgmp_model.batch import check_rows
    from rgmp_model.batch.worker import PeakMemory
    from rgmp_model.cli_propagate import run_propagate

    checked = check_rows(rows, options)
    seconds, peaks, started = [], [], time.perf_counter()
    for row in checked:
        quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
        with PeakMemory() as memory, quiet[0], quiet[1]:
            begun = time.perf_counter()
            run_propagate(row.args)
        seconds.append(time.perf_counter() - begun)
        peaks.append(memory.peak_mb)
    return time.perf_counter() - started, seconds, peaks


def on_dask(rows: list, options: dict, workers: int, torch_threads: int | None,
            dask_malloc: bool = False) -> tuple[float, float, list]:
    """The rows on a local cluster of ``workers``: (start + model load s, rows wall s, report rows).
    ``dask_malloc``: the workers keep Dask's MALLOC_TRIM_THRESHOLD_."""
    from rgmp_model.batch import local_cluster, run_batch, runner
    from rgmp_model.inference.session import load_model

    if dask_malloc:
        runner.WORKER_ENVIRON, kept = {}, runner.WORKER_ENVIRON
    started = time.perf_counter()
    with local_cluster(workers) as client:
        client.run(load_model, str(options["checkpoint"]), "cpu")
        ready = time.perf_counter() - started
        started = time.perf_counter()
        report = run_batch(client, rows, options, torch_threads=torch_threads, show_progress=False)
        wall = time.perf_counter() - started
    if dask_malloc:
        runner.WORKER_ENVIRON = kept
    bad = [r for r in report.rows if r.status != "done"]
    if bad:
        raise SystemExit(f"rows did not finish: {bad}")
    return ready, wall, list(report.rows)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_rgmp.tif"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", type=int, default=16)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=128, help="frame height and width (px)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads per row in every setup")
    parser.add_argument("--dask-malloc", action="store_true",
                        help="also run each Dask setup with Dask's MALLOC_TRIM_THRESHOLD_ on the workers")
    args = parser.parse_args()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    from rgmp_model.batch import pair_by_name
    from rgmp_model.cli_propagate import default_checkpoint

    checkpoint = (args.checkpoint or default_checkpoint()).resolve()
    cpus = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="rgmp-batch-bench-"))
    try:
        make_plate(work / "plate", args.stacks, args.frames, args.size)
        options = {"checkpoint": checkpoint, "direction": "forward", "device": "cpu"}
        frames = args.stacks * args.frames
        lines, outputs = [], {}

        def rows(name: str) -> list:
            return pair_by_name(str(work / "plate" / "W*.tif"), str(work / "plate" / "W*_labels.tif"), work / name)

        load = os.getloadavg()[0]
        wall, seconds, peaks = sequential(rows("sequential"), options)
        print(f"sequential: {wall:.1f} s", file=sys.stderr, flush=True)
        outputs["sequential"] = _outputs(work / "sequential")
        lines.append(("sequential (rgmp propagate in turn)", f"1 x {torch.get_num_threads()}", "-", wall, wall,
                      float(np.median(seconds)), max(peaks), load))
        for n, dask_malloc in [(n, m) for n in args.workers for m in [False, True][:1 + args.dask_malloc]]:
            name = f"Dask, {n} worker(s)" + (", Dask's MALLOC_TRIM_THRESHOLD_" if dask_malloc else "")
            load = os.getloadavg()[0]
            ready, wall_n, report = on_dask(rows(name), options, n, args.torch_threads, dask_malloc)
            outputs[name] = _outputs(work / name)
            print(f"{name}: {ready:.1f} s to start, {wall_n:.1f} s for the rows", file=sys.stderr, flush=True)
            threads = args.torch_threads or max(1, cpus // n)
            lines.append((name, f"{n} x {threads}", f"{ready:.1f}", wall_n, wall,
                          float(np.median([r.seconds for r in report])), max(r.peak_memory_mb for r in report), load))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.stacks} stacks x {args.frames} frames of {args.size}x{args.size} px ({frames} frames), "
          f"model {checkpoint.name}, {cpus} CPUs, torch {torch.__version__}\n")
    print("| setup | processes x torch threads | cluster start + model load (s) | rows wall (s) | frames/s | "
          "speed-up | row time, median (s) | peak memory per row, max (MB) | load average before |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, shape, ready, wall, base, row_s, peak, load in lines:
        print(f"| {name} | {shape} | {ready} | {wall:.1f} | {frames / wall:.2f} | {base / wall:.2f}x | {row_s:.2f} | "
              f"{peak:.0f} | {load:.1f} |")
    same = all(v == outputs["sequential"] for v in outputs.values())
    print(f"\noutputs identical across setups (byte for byte): {'yes' if same else 'NO'}")
    print("command: python benchmarks/batch.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
