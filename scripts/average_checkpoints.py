"""Average the weights of checkpoints of one lineage (training/average.py), e.g. the default
recipe's last step:

    python scripts/average_checkpoints.py runs/default/cells/best.pt runs/default/longclips/model.pt \
        --weights 0.5 0.5 --out runs/default/average.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.average import write_average  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="two or more checkpoints of one architecture")
    parser.add_argument("--weights", type=float, nargs="+", default=None,
                        help="one weight each, positive, summing to 1 (default: equal)")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint (float32)")
    args = parser.parse_args(argv)
    weights = args.weights or [1 / len(args.checkpoints)] * len(args.checkpoints)
    try:
        path = write_average(args.checkpoints, weights, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"average_checkpoints: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}: " + ", ".join(f"{w:g} x {p}" for p, w in zip(args.checkpoints, weights)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
