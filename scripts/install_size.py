"""How much disk the Python environment takes, by the groups that decide it (README, Install).

    python scripts/install_size.py        # the environment of this python

Sums the files every installed distribution records (its RECORD), grouped: NVIDIA CUDA libraries
(nvidia-*, cuda-*: what a CUDA build of torch pulls in), triton (torch's compiler, pulled in by
the CUDA build), torch and torchvision, napari with its Qt binding, and everything else.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from importlib import metadata

GROUPS = (  # (group, distribution name prefixes), first match wins
    ("NVIDIA CUDA libraries", ("nvidia-", "nvidia_", "cuda-", "cuda_")),
    ("triton", ("triton",)),
    ("torch and torchvision", ("torch",)),
    ("napari and Qt", ("napari", "pyqt", "pyside", "qtpy", "superqt", "vispy", "magicgui", "app-model", "npe2")),
)


def group_of(name: str) -> str:
    name = name.lower()
    return next((group for group, prefixes in GROUPS if name.startswith(prefixes)), "everything else")


def distribution_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or ():
        try:
            total += dist.locate_file(file).stat().st_size
        except OSError:
            pass
    return total


def main() -> None:
    sizes: dict[str, int] = defaultdict(int)
    seen: set[str] = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        sizes[group_of(name)] += distribution_bytes(dist)
    total = sum(sizes.values())
    print(f"$ python scripts/install_size.py   ({sys.prefix})")
    for group in [g for g, _ in GROUPS] + ["everything else"]:
        print(f"{group:>24}: {sizes[group] / 1e9:5.1f} GB")
    print(f"{'total':>24}: {total / 1e9:5.1f} GB")


if __name__ == "__main__":
    main()
