"""Propagation options: one frozen value, validated once, and the rules that resolve it.

    options = PropagationOptions(direction="both", max_size=0, device="cpu")   # 0: full size
    session = open_session("model.pt", frames, options)                        # rgmp_model.inference.session

``max_size`` (the working size's bound: None = the model's recorded working size when it has one,
else full size; 0 = full size; N >= 32 = N px) is resolved and applied by the one owner of the
working size, :class:`rgmp_model.inference.working_size.WorkingSize`; ``resolve_max_size``,
``working_size`` and ``object_working_size`` here are its rules under their public names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch

from rgmp_model.constants import NETWORK_STRIDE
from rgmp_model.inference.propagators import OFFICIAL_SCALES
from rgmp_model.inference.choices import (  # noqa: F401 - importable from here too
    DEFAULT_REGION, DIRECTIONS, FLOW_METHODS, MODES, PRECISIONS, REGION_MODES,
)
from rgmp_model.inference.working_size import (  # noqa: F401 - re-exported
    FULL_SIZE, MIN_MAX_SIZE, SMALL_OBJECT_CEILING, SMALL_OBJECT_SIDE, WorkingSize,
)
MULTISCALE = OFFICIAL_SCALES  # the scales averaged by --multiscale / the widget's "multi-scale"
MAX_ADAPT = 10_000  # iterations of test-time adaptation at most (a guard against typos)


@dataclass(frozen=True)
class PropagationOptions:
    """How a stack is propagated; checked when made (a ValueError says what to change).

    direction: "forward", "backward" or "both" (what ``session.propagate()`` does by default).
    mode: "default" (objects batched, soft aggregation) or "official" (the authors' run.py).
    scales: working scales averaged per frame; None = (1.0,), or 0.5, 0.75, 1.0 in official mode
        (``MULTISCALE``).
    max_size: bound on the longer side of the working resolution: None = the model's recorded
        working size when it has one, else full size; 0 = full size; N >= 32 = N px.
    device: "auto" (cuda, mps, cpu) or a device name. precision: "auto" (bf16/fp16 autocast on
        CUDA in default mode, fp32 otherwise), "fp32", "bf16" or "fp16".
    object_batch: most objects per network call; None = all on a GPU, one at a time on the CPU.
    flow: None, "tvl1" or "ilk": flow guidance (default mode only).
    region: "auto", "on" or "off": region mode (one crop per object at full resolution, all crops
        batched; ``inference/region.py``) instead of whole frames at the working size. "auto"
        decides per keyframe's stretch (:func:`~rgmp_model.inference.region_stretch.uses_region_mode`:
        many objects small relative to a frame longer than 256 px; never with official mode, flow
        or several scales). Region mode ignores ``max_size`` (crops are cut from the full frames).
    region_crop_size: network side of every crop in region mode (a multiple of 32); None = from the
        keyframe's median object, seen at twice its size (``RegionOptions.crop_scale``), 64-256 px.
    split_divisions: region mode only. False (default): an object that divides keeps its id on
        both parts. True: a part that separates from an object (a daughter cell holding at least
        a fifth of it) gets a new id, the largest id on any keyframe + 1, + 2, ... (unique in the
        session), and ``session.divisions`` records {new id: parent id}.
    adapt: iterations of test-time adaptation (0: none): before propagating, a copy of the model
        is fine-tuned in memory on the session's keyframes (``rgmp_model.adapt``); the session
        keeps it while the keyframes it learnt from stay the same, so a correction reuses it.
    """

    direction: str = "forward"
    mode: str = "default"
    scales: tuple[float, ...] | None = None
    max_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    object_batch: int | None = None
    flow: str | None = None
    region: str = DEFAULT_REGION
    region_crop_size: int | None = None
    split_divisions: bool = False
    adapt: int = 0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.flow is not None and self.flow not in FLOW_METHODS:
            raise ValueError(f"flow must be None or one of {FLOW_METHODS}, got {self.flow!r}")
        if self.flow is not None and self.mode == "official":
            raise ValueError("flow guidance is not part of the authors' procedure: use mode='default' with flow")
        object.__setattr__(self, "max_size", WorkingSize.check_bound(self.max_size))
        if self.object_batch is not None and (isinstance(self.object_batch, bool) or self.object_batch < 1):
            raise ValueError(f"object_batch must be >= 1 or None, got {self.object_batch!r}")
        if self.scales is not None:
            scales = tuple(float(s) for s in self.scales)
            if not scales or any(not 0 < s <= 4 for s in scales):
                raise ValueError(f"scales must be a non-empty list of factors in (0, 4], got {self.scales}")
            object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "device", str(self.device))
        if not isinstance(self.adapt, Integral) or isinstance(self.adapt, bool) or not 0 <= self.adapt <= MAX_ADAPT:
            raise ValueError(f"adapt must be a number of iterations from 0 (no adaptation) to {MAX_ADAPT}, "
                             f"got {self.adapt!r}")
        object.__setattr__(self, "adapt", int(self.adapt))
        self._check_region()

    def _check_region(self) -> None:
        if self.region not in REGION_MODES:
            raise ValueError(f"region must be one of {REGION_MODES}, got {self.region!r}")
        size = self.region_crop_size
        if size is not None and (not isinstance(size, Integral) or isinstance(size, bool)
                                 or size < NETWORK_STRIDE or size % NETWORK_STRIDE):
            raise ValueError(f"region_crop_size must be a multiple of {NETWORK_STRIDE} (pixels, e.g. 128) or None "
                             f"(chosen from the objects' size), got {size!r}")
        if size is not None:
            object.__setattr__(self, "region_crop_size", int(size))
        if not isinstance(self.split_divisions, bool):
            raise ValueError(f"split_divisions must be True or False, got {self.split_divisions!r}")
        if self.region == "on":
            if self.mode == "official":
                raise ValueError("region mode runs the default procedure, not the authors' one: use "
                                 "mode='default' with region='on', or region='off' with mode='official'")
            if self.flow is not None:
                raise ValueError("flow guidance works on whole frames: use region='off' with flow, "
                                 "or no flow with region='on'")
            if self.scales is not None and self.scales != (1.0,):
                raise ValueError("region mode works at one scale: use region='off' with several scales, "
                                 "or scales=None with region='on'")
        if self.split_divisions and (self.region == "off" or self.mode == "official"):
            raise ValueError("split_divisions works in region mode only: use region='on' or 'auto' "
                             "(and mode='default'), or split_divisions=False")

    @classmethod
    def from_keywords(cls, *, multiscale: bool = False, **options: Any) -> PropagationOptions:
        """The keyword arguments ``PropagationSession`` took before options existed
        (``multiscale=True`` means ``scales=MULTISCALE``)."""
        if multiscale and options.get("scales") is None:
            options["scales"] = MULTISCALE
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown propagation option(s) {sorted(unknown)}: see PropagationOptions")
        return cls(**options)

    def replace(self, **changes: Any) -> PropagationOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def resolved(self, recorded_size: int | None = None) -> PropagationOptions:
        """These options as a session runs them: ``max_size`` resolved against the model's
        recorded working size (never None: 0 = full size) and ``scales`` made explicit."""
        scales = self.scales
        if scales is None:
            scales = OFFICIAL_SCALES if self.mode == "official" else (1.0,)
        return self.replace(max_size=resolve_max_size(self.max_size, recorded_size), scales=scales)


resolve_max_size = WorkingSize.resolve_bound  # the public names of the working size's rules
working_size = WorkingSize.scaled
object_working_size = WorkingSize.for_objects


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; a named device is checked to exist."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from error
    if resolved.type not in ("cpu", "cuda", "mps"):  # meta, xla, ...: torch knows them, propagation cannot run there
        raise ValueError(f"device {device!r} cannot run a propagation: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here: use 'auto' or 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here: use 'auto' or 'cpu'")
    return resolved


def autocast_dtype(precision: str, device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda" or mode == "official":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp32":
        return None
    if device.type != "cuda":
        raise ValueError(f"{precision} autocast is only used on CUDA; on {device.type} use precision='fp32'")
    return torch.bfloat16 if precision == "bf16" else torch.float16
