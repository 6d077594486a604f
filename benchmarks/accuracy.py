"""Accuracy and speed of a model against the non-learned baselines, on DAVIS-layout sequences, on
the plugin's synthetic samples or on a fixed set of realistic fluorescence nuclei time-lapses.

    python benchmarks/accuracy.py ../shared/data/davis16-dev libby scooter-black
    python benchmarks/accuracy.py samples                 # synthetic microscopy + synthetic video
    python benchmarks/accuracy.py fluorescence            # sparse-uint8 dense-uint16 large-uint8
    python benchmarks/accuracy.py lowcontrast             # hela-uint16 faint-uint8 mixed-uint16
    python benchmarks/accuracy.py DATA_ROOT SEQ... --checkpoint weights.pth --methods model
    python benchmarks/accuracy.py DATA_ROOT SEQ... --compare resnet18-v0.1=runs/models/resnet18-v0.1.pt

Every method propagates forward from frame 0's ground truth (DAVIS semi-supervised protocol) and
writes palette PNGs like `rgmp propagate` under OUT/<method>/<sequence>/; the outputs are then read
back and scored with `rgmp evaluate`'s code (J, F, J&F; first and last frames excluded).
Methods: model (default: the bundled model), model+flow (the same with flow guidance),
flow (optical-flow warping baseline), copy (keyframe copied to every frame). frames/s counts the
propagation alone (no file writing), on this machine's CPU or the chosen device.
Working size: --max-size when given; else each model's recorded size, made larger for small
objects exactly as `rgmp propagate` does (the flow baseline at the model's size per sequence).
The fluorescence set (benchmarks/fluorescence_set.py) knows every nucleus's brightness: its table
adds "J dim10", the mean J of the dimmest tenth of the nuclei (at least one per sequence). The
low-contrast set (large nuclei 1.1-1.5x as bright as their surroundings, 100-150 frames) likewise.
Every table has "area end": the mean over objects of predicted / true area on the last frame of
each object's track (1.0: kept its size; masks that shrink frame after frame end well below 1),
and "|1-area|", the mean distance of those ratios from 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import copy_propagation, flow_propagation  # noqa: E402
from benchmarks.fluorescence_set import (  # noqa: E402
    FLUORESCENCE_SET, LOW_CONTRAST_SET, fluorescence_sequences, low_contrast_sequences,
)
from rgmp_model.eval.areas import final_area_ratios  # noqa: E402
from rgmp_model.cli import find_sequences  # noqa: E402
from rgmp_model.io.label_io import LabelStackWriter, frame_names, open_label_stack  # noqa: E402
from rgmp_model.eval.metrics import SequenceScores, evaluate_sequence, summarize  # noqa: E402
from rgmp_model.inference.labels import object_sides  # noqa: E402
from rgmp_model.inference.region_stretch import uses_region_mode  # noqa: E402
from rgmp_model.inference.options import (  # noqa: E402
    PropagationOptions, object_working_size, resolve_max_size, working_size,
)
from rgmp_model.io.stack_io import open_image_stack  # noqa: E402
from rgmp_model.data.synthetic_fluorescence import dimmest_ids  # noqa: E402

METHODS = ("model", "model+flow", "flow", "copy")
SAMPLES = ("microscopy", "video")
FALLBACK_MAX_SIZE = 480  # the benchmark's working size when neither --max-size nor the model gives one


@dataclass
class EvalSequence:
    name: str
    frames: Any  # (T, H, W[, C]) array-like
    truth: Any  # (T, H, W) label array-like
    images: Any = None  # what frame_names() reads the output file names from
    brightness: Mapping[int, float] | None = None  # object id -> mean brightness, when known


@dataclass
class Run:
    method: str
    scores: SequenceScores
    frames: int
    seconds: float
    dim_j: tuple[float, ...] | None = None  # J of the dimmest tenth of the objects, when brightness is known
    areas: tuple[float, ...] = ()  # predicted / true area at the end of each object's track
    adapt_seconds: float = 0.0  # test-time adaptation before propagating (not in frames/s)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def davis_sequences(root: Path, names: Sequence[str], resolution: str = "480p") -> list[EvalSequence]:
    found = []
    for name in names:
        images = open_image_stack(root / "JPEGImages" / resolution / name)
        truth = open_label_stack(root / "Annotations" / resolution / name)
        found.append(EvalSequence(name, images, truth, images))
    return found


def sample_sequences(names: Sequence[str]) -> list[EvalSequence]:
    from napari_rgmp.samples import sample_microscopy_sequence, sample_video_sequence

    makers = {"microscopy": sample_microscopy_sequence, "video": sample_video_sequence}
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown sample {', '.join(unknown)}: choose from {', '.join(SAMPLES)}")
    out = []
    for name in names:
        seq = makers[name]()
        out.append(EvalSequence(f"synthetic-{name}", seq.frames, seq.labels))
    return out


def load_sequences(data_root: str, names: Sequence[str]) -> list[EvalSequence]:
    """'samples' (the named samples, default both), 'fluorescence' or 'lowcontrast' (the named
    sequences of that set, default all) or the named sequences of a DAVIS root."""
    if data_root == "samples":
        return sample_sequences(names or SAMPLES)
    if data_root == "fluorescence":
        found = fluorescence_sequences(names)
        return [EvalSequence(s.name, s.frames, s.labels, brightness=s.brightness) for s in found]
    if data_root == "lowcontrast":
        found = low_contrast_sequences(names)
        return [EvalSequence(s.name, s.frames, s.labels, brightness=s.brightness) for s in found]
    if not names:
        raise ValueError("name the sequences to evaluate, e.g. libby scooter-black")
    return davis_sequences(Path(data_root), names)


def benchmark_max_size(given: int | None, recorded: int | None) -> int:
    """The working size (0 = full size) by the library's rule: --max-size when given, else the
    model's working_size metadata (as `rgmp propagate` uses it), else FALLBACK_MAX_SIZE."""
    return resolve_max_size(given, recorded, fallback=FALLBACK_MAX_SIZE)


def sequence_working_size(seq: EvalSequence, max_size: int, fit: bool) -> tuple[int, int]:
    """(height, width) at which ``seq`` runs full frames: ``max_size`` (0 = full size), made larger
    for small objects as the library does when the model's recorded size applies (``fit``;
    :func:`rgmp_model.inference.options.object_working_size`)."""
    key = np.asarray(seq.truth[0])
    h, w = key.shape
    return object_working_size(h, w, max_size, object_sides(key)) if fit else working_size(h, w, max_size)


def propagation(method: str, seq: EvalSequence, model: Any, max_size: int | None, flow_method: str,
                device: str, region: str = "auto", fit: bool = False,
                adapt: int = 0, region_crop_size: int | None = None) -> Iterator[tuple[int, np.ndarray, dict[int, float]]]:
    """``model``: a checkpoint path or an RGMP network (opened with ``rgmp_model.open_session``);
    ``region``: the session's region mode (auto, on, off) for the model methods. ``fit``:
    ``max_size`` is the model's recorded size, so the sessions get ``max_size=None`` (as
    `rgmp propagate` without --max-size: larger for small objects) and flow the same size.
    ``adapt``: test-time adaptation iterations of the model methods (done when the first result
    is asked for)."""
    key = np.asarray(seq.truth[0])
    if method == "copy":
        return copy_propagation(seq.frames, 0, key, "forward")
    if method == "flow":
        size = max(sequence_working_size(seq, max_size or 0, fit)) if fit else max_size
        return flow_propagation(seq.frames, 0, key, "forward", size, flow_method)
    from rgmp_model.inference.session import open_session

    options = PropagationOptions(direction="forward", max_size=None if fit else max_size, device=device,
                                 region=region, flow=flow_method if method == "model+flow" else None, adapt=adapt,
                                 region_crop_size=region_crop_size)
    session = open_session(model, seq.frames, options)
    session.add_keyframe(0, key)
    return session.propagate()


def run_method(method: str, seq: EvalSequence, model: Any, out_root: Path, max_size: int | None,
               flow_method: str, device: str, kind: str | None = None, region: str = "auto",
               fit: bool = False, adapt: int = 0, region_crop_size: int | None = None) -> Run:
    """Propagate ``seq`` with ``kind`` (model, model+flow, flow or copy; default ``method``),
    write the labels under ``out_root/method`` and score the written files (``fit``, ``adapt``:
    see :func:`propagation`; the adaptation's time is measured apart from frames/s)."""
    truth0 = np.asarray(seq.truth[0])
    count = len(seq.truth)
    shape = (count, *truth0.shape)
    target = out_root / method / seq.name
    names = frame_names(seq.images, count) if seq.images is not None else None
    seconds = adapt_seconds = 0.0
    kind = kind or method
    with LabelStackWriter(target, shape, np.uint8, frame_names=names) as writer:
        results = propagation(kind, seq, model, max_size, flow_method, device, region, fit,
                              adapt if kind.startswith("model") else 0, region_crop_size)
        started = time.perf_counter()
        for t, labels, _ in results:
            if t == 0 and adapt and kind.startswith("model"):  # the keyframe comes after the adaptation
                adapt_seconds = time.perf_counter() - started
            else:
                seconds += time.perf_counter() - started
            writer[t] = labels.astype(np.uint8)
            started = time.perf_counter()
    # Scored as `rgmp evaluate OUT/<method> GT` does: the written files against the ground truth.
    predicted = open_label_stack(find_sequences(out_root / method)[seq.name])
    scores = evaluate_sequence(predicted, seq.truth, name=seq.name)
    dim_j = None
    if seq.brightness is not None:
        scored = {o.object_id: o.j_mean for o in scores.objects}
        dim_j = tuple(scored[i] for i in dimmest_ids({i: seq.brightness[i] for i in scored}, 0.1))
    areas = tuple(final_area_ratios(predicted, seq.truth).values())
    return Run(method, scores, count - 1, seconds, dim_j, areas, adapt_seconds)


def _dim_cell(values: Sequence[float] | None) -> str:
    return f" {np.mean(values):7.3f}" if values else f" {'-':>7}"


def _area_cells(ratios: Sequence[float]) -> str:
    if not ratios:
        return f" {'-':>8} {'-':>8}"
    return f" {np.mean(ratios):8.3f} {np.mean(np.abs(1.0 - np.asarray(ratios))):8.3f}"


def format_runs(runs: list[Run], methods: Sequence[str]) -> str:
    """The results table; a "J dim10" column when some sequence knows its objects' brightness."""
    dim = any(r.dim_j is not None for r in runs)
    width = max([11, *(len(m) for m in methods)])
    lines = [f"{'method':<{width}} {'sequence':<22} {'J':>6} {'F':>6} {'J&F':>6}" + (" J dim10" if dim else "")
             + f" {'area end':>8} {'|1-area|':>8} {'frames/s':>9}"]
    lines.append("-" * len(lines[0]))
    for method in methods:
        mine = [r for r in runs if r.method == method]
        for r in mine:
            lines.append(f"{method:<{width}} {r.scores.name:<22} {r.scores.j_mean:6.3f} {r.scores.f_mean:6.3f} "
                         f"{r.scores.jf_mean:6.3f}" + (_dim_cell(r.dim_j) if dim else "") + _area_cells(r.areas)
                         + f" {r.fps:9.2f}")
        overall = summarize([r.scores for r in mine])
        fps = sum(r.frames for r in mine) / max(sum(r.seconds for r in mine), 1e-9)
        dim_all = [j for r in mine for j in (r.dim_j or ())]  # over objects, like the other columns
        areas_all = [a for r in mine for a in r.areas]
        lines.append(f"{method:<{width}} {'mean':<22} {overall.j_mean:6.3f} {overall.f_mean:6.3f} "
                     f"{overall.jf_mean:6.3f}" + (_dim_cell(dim_all) if dim else "") + _area_cells(areas_all)
                     + f" {fps:9.2f}")
        lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def mean_jf(runs: list[Run], method: str) -> float:
    return summarize([r.scores for r in runs if r.method == method]).jf_mean


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", help="a DAVIS root (JPEGImages/, Annotations/), 'samples', 'fluorescence' "
                        "or 'lowcontrast'")
    parser.add_argument("sequences", nargs="*", help="sequence names (for 'samples': microscopy, video; for "
                        f"'fluorescence': {', '.join(FLUORESCENCE_SET)}; for 'lowcontrast': "
                        f"{', '.join(LOW_CONTRAST_SET)})")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "model+flow"),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: model,flow,copy)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="another model in the same table, as method NAME (repeatable), each at its own "
                             "working size unless --max-size is given; e.g. resnet18-v0.1=runs/models/resnet18-v0.1.pt")
    parser.add_argument("--max-size", type=int, default=None, metavar="PX",
                        help="working size (longer side) of the model and the flow baseline; 0 = full size "
                             "(default: the model's working_size metadata as `rgmp propagate` uses it, else "
                             f"{FALLBACK_MAX_SIZE})")
    parser.add_argument("--region", choices=("auto", "on", "off"), default="auto",
                        help="region mode of the model methods, as `rgmp propagate --region` (default auto)")
    parser.add_argument("--region-crop-size", type=int, default=None, metavar="PX",
                        help="network side of every region-mode crop (a multiple of 32; default: from the "
                             "keyframe's median object seen at twice its size, 64-256 px)")
    parser.add_argument("--adapt", type=int, default=0, metavar="N",
                        help="test-time adaptation of the model methods: N iterations on the keyframe first "
                             "(as rgmp propagate --adapt; its time is printed apart from frames/s)")
    parser.add_argument("--flow-method", choices=("tvl1", "ilk"), default="tvl1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="where the outputs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods takes names from {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        sequences = load_sequences(args.data_root, args.sequences)
    except ValueError as error:
        parser.error(str(error))

    compared: dict[str, Path] = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in METHODS or name in compared:
            parser.error(f"--compare takes NAME=CHECKPOINT with a new name, got {item!r}")
        if not Path(path).is_file():
            parser.error(f"--compare {name}: {path} does not exist")
        compared[name] = Path(path)

    model, working = None, None
    if any(m.startswith("model") for m in methods):
        from rgmp_model.nn.models import bundled_checkpoint
        from rgmp_model.inference.session import load_model

        model = args.checkpoint or bundled_checkpoint()  # sessions open it from the model cache
        if model is None:
            parser.error("this napari-rgmp has no bundled model: pass --checkpoint")
        info = load_model(model, args.device)[1]
        print(f"model: {model} ({info.describe()})")
        working = info.working_size
    max_size = benchmark_max_size(args.max_size, working)
    fit = args.max_size is None and working is not None  # the model's size: larger for small objects
    print(f"device {args.device}, {torch.get_num_threads()} torch threads, working size <= {max_size or 'full'} px"
          + (" (more for small objects, as in rgmp propagate)" if fit else ""))
    for seq in sequences:
        h, w = np.asarray(seq.truth[0]).shape
        sh, sw = sequence_working_size(seq, max_size, fit)
        region = uses_region_mode(PropagationOptions(region=args.region), np.asarray(seq.truth[0]))
        print(f"  {seq.name}: {len(seq.truth)} frames of {w}x{h}, {len(np.unique(np.asarray(seq.truth[0]))) - 1} "
              f"object(s), " + ("region mode (crops at full resolution)" if region else f"full frames at {sw}x{sh}"))

    # method name -> (propagation kind, model, working size, fit to small objects)
    plans: dict[str, tuple[str, Any, int, bool]] = {m: (m, model, max_size, fit) for m in methods}
    for name, path in compared.items():
        from rgmp_model.inference.session import load_model

        info = load_model(path, args.device)[1]
        plans[name] = ("model", path, benchmark_max_size(args.max_size, info.working_size),
                       args.max_size is None and info.working_size is not None)
        print(f"{name}: {path} ({info.describe()}), working size <= {plans[name][2] or 'full'} px")
    methods = [m for m in methods if m.startswith("model")] + list(compared) + [m for m in methods
                                                                               if not m.startswith("model")]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        out_root = args.out or Path(scratch)
        for seq in sequences:
            for method in methods:
                kind, method_model, method_size, method_fit = plans[method]
                run = run_method(method, seq, method_model, out_root, method_size, args.flow_method, args.device,
                                 kind=kind, region=args.region, fit=method_fit, adapt=args.adapt,
                                 region_crop_size=args.region_crop_size)
                dim = f"  J dim10 {np.mean(run.dim_j):.3f}" if run.dim_j else ""
                area = f"  area end {np.mean(run.areas):.3f}" if run.areas else ""
                area += f"  adapted in {run.adapt_seconds:.1f} s" if run.adapt_seconds else ""
                print(f"  {method:<11} {seq.name:<22} J&F {run.scores.jf_mean:.3f}{dim}{area}  {run.fps:.2f} frames/s",
                      flush=True)
                runs.append(run)
    print()
    print(format_runs(runs, methods))
    adapted = [r.adapt_seconds for r in runs if r.adapt_seconds]
    if adapted:
        print(f"test-time adaptation, {args.adapt} iterations: {np.mean(adapted):.1f} s per sequence on average "
              f"(at most {max(adapted):.1f} s), {torch.get_num_threads()} torch threads")
    baselines = [m for m in ("flow", "copy") if m in methods]
    for learned in (m for m in methods if m.startswith("model") or m in compared):
        if baselines:
            best = max(baselines, key=lambda m: mean_jf(runs, m))
            print(f"{learned} - better baseline ({best}): {mean_jf(runs, learned) - mean_jf(runs, best):+.3f} J&F")
    shown = list(argv) if argv is not None else sys.argv[1:]
    print("command: python benchmarks/accuracy.py " + " ".join(shown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
