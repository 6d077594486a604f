"""A fixed validation set of realistic fluorescence nuclei time-lapses (``benchmarks/accuracy.py fluorescence``).

The sequences come from :func:`rgmp_model.data.synthetic_fluorescence.synthetic_fluorescence` with the
seeds ``BASE_SEED + k`` (k = position in ``FLUORESCENCE_SET``). Training never draws these on
purpose: its synthetic sources seed each sequence from ``np.random.default_rng((config.seed + j, i))``
(``training/data.py``), i.e. random 31-bit generator seeds, not a fixed base + small offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rgmp_model.data.synthetic_fluorescence import FluorescenceSequence, synthetic_fluorescence

__all__ = ["BASE_SEED", "FLUORESCENCE_SET", "FluorescenceCase", "fluorescence_sequences"]

BASE_SEED = 2026_1129


@dataclass(frozen=True)
class FluorescenceCase:
    """Generation parameters of one sequence of the set."""

    num_frames: int
    height: int
    width: int
    num_cells: int
    dtype: str
    division_rate: float = 0.003


FLUORESCENCE_SET: dict[str, FluorescenceCase] = {
    "sparse-uint8": FluorescenceCase(30, 512, 512, 15, "uint8"),
    "dense-uint16": FluorescenceCase(30, 512, 512, 60, "uint16"),
    "large-uint8": FluorescenceCase(30, 1024, 1024, 40, "uint8"),
}


def fluorescence_sequences(names: Sequence[str] = ()) -> list[FluorescenceSequence]:
    """The named sequences of ``FLUORESCENCE_SET`` (default all), generated (a few seconds each),
    each named after its entry."""
    chosen = list(names) or list(FLUORESCENCE_SET)
    unknown = [n for n in chosen if n not in FLUORESCENCE_SET]
    if unknown:
        raise ValueError(f"unknown fluorescence sequence {', '.join(unknown)}: choose from "
                         f"{', '.join(FLUORESCENCE_SET)}")
    seeds = {name: BASE_SEED + k for k, name in enumerate(FLUORESCENCE_SET)}
    out = []
    for name in chosen:
        case = FLUORESCENCE_SET[name]
        seq = synthetic_fluorescence(case.num_frames, case.height, case.width, case.num_cells, seed=seeds[name],
                                     dtype=case.dtype, division_rate=case.division_rate)
        out.append(replace(seq, name=name))
    return out


# ---------------------------------------------------------------- large low-contrast nuclei

LOW_CONTRAST_BASE_SEED = 2026_1204


@dataclass(frozen=True)
class LowContrastCase:
    """Generation parameters of one sequence of the low-contrast set."""

    num_frames: int
    height: int
    width: int
    num_cells: int
    dtype: str
    contrast: tuple[float, float]
    diameter: tuple[float, float]
    division_rate: float = 0.004


LOW_CONTRAST_SET: dict[str, LowContrastCase] = {
    "hela-uint16": LowContrastCase(150, 740, 770, 8, "uint16", (1.2, 1.4), (45, 65)),
    "faint-uint8": LowContrastCase(120, 512, 512, 8, "uint8", (1.1, 1.3), (40, 60)),
    "mixed-uint16": LowContrastCase(100, 640, 640, 12, "uint16", (1.1, 1.5), (40, 70), 0.006),
}


def low_contrast_sequences(names: Sequence[str] = ()) -> list[FluorescenceSequence]:
    """The named sequences of ``LOW_CONTRAST_SET`` (default all): large nuclei 1.1-1.5x as bright as
    their surroundings, long tracks, divisions; seeds ``LOW_CONTRAST_BASE_SEED + k``, which training
    never draws (its synthetic sources take random 31-bit seeds)."""
    from rgmp_model.data.synthetic_low_contrast import synthetic_low_contrast

    chosen = list(names) or list(LOW_CONTRAST_SET)
    unknown = [n for n in chosen if n not in LOW_CONTRAST_SET]
    if unknown:
        raise ValueError(f"unknown low-contrast sequence {', '.join(unknown)}: choose from "
                         f"{', '.join(LOW_CONTRAST_SET)}")
    seeds = {name: LOW_CONTRAST_BASE_SEED + k for k, name in enumerate(LOW_CONTRAST_SET)}
    out = []
    for name in chosen:
        case = LOW_CONTRAST_SET[name]
        seq = synthetic_low_contrast(case.num_frames, case.height, case.width, case.num_cells, seed=seeds[name],
                                     dtype=case.dtype, contrast=case.contrast, diameter=case.diameter,
                                     division_rate=case.division_rate)
        out.append(replace(seq, name=name))
    return out
