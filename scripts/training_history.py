"""The validation history of a training run as a markdown table (README / docs/benchmarks.md).

    python scripts/training_history.py runs/default/pretrain runs/default/video runs/default/cells

Reads each run folder's ``validation.csv`` (written by the trainer every
``schedule.validate_every`` iterations: J, F and J&F per validation sequence and overall) and
prints one row per validation: the stage (the folder's name), the iteration, J&F per sequence
(generated ones shortened: ``synthetic_fluorescence_1000006_0002`` -> ``fluorescence 2``), the
mean over the real clips alone (comparable across stages that validate on different synthetic
sets) and the overall J&F (the trainer's choice: mean over all objects); the best row of each stage
(the checkpoint its ``best.pt`` holds) is marked.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_history(run: Path) -> dict[int, dict[str, float]]:
    """``run/validation.csv`` -> {iteration: {sequence (and "overall"): J&F}}."""
    path = run / "validation.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give the folder of a training run that validated")
    history: dict[int, dict[str, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            history.setdefault(int(row["iteration"]), {})[row["sequence"]] = float(row["jf"])
    return history


def short_name(sequence: str) -> str:
    """``synthetic_<flavour>_<seed>_<index>`` -> ``<flavour> <index>``; other names unchanged."""
    parts = sequence.split("_")
    if len(parts) == 4 and parts[0] == "synthetic" and parts[2].isdigit() and parts[3].isdigit():
        return f"{parts[1]} {int(parts[3])}"
    return sequence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders (output_dir), in order")
    args = parser.parse_args(argv)
    histories = [(run.name, read_history(run)) for run in args.runs]
    found = {s for _, h in histories for scores in h.values() for s in scores if s != "overall"}
    real = sorted(s for s in found if short_name(s) == s)
    sequences = real + sorted(found - set(real))
    print("| stage | iteration | " + " | ".join(short_name(s) for s in sequences) + " | clips mean | overall J&F |")
    print("|---|---|" + "---|" * len(sequences) + "---|---|")
    for stage, history in histories:
        best = max(history, key=lambda it: history[it].get("overall", float("-inf")))
        for iteration, scores in sorted(history.items()):
            cells = [f"{scores[s]:.3f}" if s in scores else "-" for s in sequences]
            clips = [scores[s] for s in real if s in scores]
            mean = f"{sum(clips) / len(clips):.3f}" if clips else "-"
            overall = f"{scores.get('overall', float('nan')):.3f}"
            mark = " (best)" if iteration == best else ""
            print(f"| {stage} | {iteration:,}{mark} | " + " | ".join(cells) + f" | {mean} | {overall} |")
    print("\ncommand: python scripts/training_history.py " + " ".join(str(r) for r in args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
