"""``rgmp propagate``: its options and its run (the other commands are in :mod:`rgmp_model.cli`).

A (T, H, W[, C]) stack is one propagation. A stack with time and z (TZYX, ZTYX, ...) is propagated
along ``--axis`` once per index of the other axis, each from the keyframes of its own labels. The
output is written frame by frame as the engine yields it (a TIFF or zarr store on disk, a PNG
folder, or the Cell Tracking Challenge layout), so it never has to fit in memory.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rgmp_model.constants import ADAPT_ITERATIONS
from rgmp_model.inference.choices import DEFAULT_DIRECTION, DEFAULT_REGION, DIRECTIONS, FLOW_METHODS, PRECISIONS, REGION_MODES
from rgmp_model.io.outputs import OUTPUT_FORMATS
from rgmp_model.steps import step

DESCRIPTION = (
    "IMAGES: a TIFF stack (also LZW/deflate compressed, ImageJ or OME hyperstacks), a zarr array or "
    "OME-Zarr group, a folder of frames (DAVIS layout) or one image. A stack with time and z axes "
    "(TZYX, ZTYX; axes from the file, else guessed T then Z, or named with --axes) is propagated along "
    "--axis once per index of the other axis. LABELS: a label image for one frame (--reference-frame, "
    "default 0), a label stack (TIFF, zarr or folder) whose labelled frames are all keyframes (unless "
    "--reference-frame picks one), or for a stack with time and z a label stack with the same axes "
    "(each index propagated from its own keyframes); a 2-D or 3-D label file then belongs to the index "
    "--at of the other axis. OUT: a .tif or .zarr label stack (the input's axes, without channels) or a "
    "folder of palette PNGs named like the input frames, written frame by frame; --format ctc writes "
    "the Cell Tracking Challenge layout. Frames that the chosen direction does not reach stay empty "
    "(TIFF, zarr, CTC) or are not written (PNG folder)."
)


def add_propagate(commands: argparse._SubParsersAction) -> None:
    """The ``propagate`` sub-command and its options."""
    p = commands.add_parser("propagate", help="propagate labels from annotated frames to a whole stack",
                            description=DESCRIPTION)
    p.add_argument("images", type=Path, help="TIFF stack, zarr store, folder of frames, or image")
    p.add_argument("--labels", type=Path, required=True, help="label image, label stack or label hyperstack")
    add_propagate_options(p)
    p.set_defaults(run=run_propagate)


def add_propagate_options(p: argparse.ArgumentParser, out: bool = True) -> None:
    """The options of one propagation (all but IMAGES and --labels); without ``out``, no --out
    (``rgmp batch`` takes them for all its rows, each row its own output)."""
    p.add_argument("--reference-frame", type=int, default=None, metavar="N",
                   help="frame the label image belongs to (default 0), or the one frame of a label stack to use")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="napari-rgmp checkpoint or the authors' weights.pth (default: the bundled model)")
    if out:
        p.add_argument("--out", type=Path, default=None,
                       help="output .tif, .zarr or PNG folder, or with --format ctc a result folder (default: "
                       "<images name>_rgmp.tif, or <images name>_RES, in the current directory)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="auto",
                   help="auto: from OUT's suffix; ctc: the Cell Tracking Challenge layout (mask000.tif ..., "
                   "res_track.txt)")
    p.add_argument("--axis", default=None, metavar="t|z|N",
                   help="for a stack with time and z: the axis to propagate along (a letter or the axis "
                   "number in the file; default t)")
    p.add_argument("--axes", default=None, metavar="LETTERS",
                   help="the input's axes when the file does not name them, e.g. ZTYX or TCYX (letters TZCYX)")
    p.add_argument("--at", type=int, default=None, metavar="I",
                   help="the index of the other axis a 2-D or 3-D LABELS file belongs to (time and z stacks)")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="the channel to propagate on, for images with channels other than 1 or 3 (RGB)")
    p.add_argument("--direction", choices=DIRECTIONS, default=DEFAULT_DIRECTION)
    p.add_argument("--official", action="store_true",
                   help="the authors' procedure: objects one by one, background pass, 3 scales")
    p.add_argument("--multiscale", action="store_true", help="average scales 0.5, 0.75 and 1.0")
    p.add_argument("--max-size", type=int, default=None, metavar="PX",
                   help="bound on the longer side of the working resolution; 0 = full size (default: "
                   "the model's working_size metadata when it has one, larger for small objects up to full "
                   "size or 512 px; else full size)")
    p.add_argument("--region", choices=REGION_MODES, default=DEFAULT_REGION,
                   help="region mode for many small objects (one full-resolution crop per object): auto "
                   "decides from the keyframe's objects and frame size")
    p.add_argument("--region-crop-size", type=int, default=None, metavar="PX",
                   help="region mode: network side of every object's crop, a multiple of 32 (default: each "
                   "object seen at twice its size, 64-256 px; 64 is several times faster with many cells, "
                   "but large dim objects shrink)")
    p.add_argument("--split-divisions", action="store_true",
                   help="in region mode, a part that separates from an object becomes a new object with "
                   "its parent recorded (res_track.txt parents with --format ctc)")
    p.add_argument("--flow", choices=FLOW_METHODS, default=None,
                   help="flow guidance: warp the previous mask along optical flow first (default mode only)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0])
    p.add_argument("--adapt", type=int, nargs="?", const=ADAPT_ITERATIONS, default=0, metavar="N",
                   help="test-time adaptation: first fine-tune a copy of the model on the keyframes for N "
                   f"iterations (--adapt alone: {ADAPT_ITERATIONS}), in memory (the model file is not changed); "
                   "0 = off (default)")


def default_checkpoint() -> Path:
    """The bundled model, or a FileNotFoundError that says to pass --checkpoint."""
    from rgmp_model.nn.models import bundled_checkpoint

    bundled = bundled_checkpoint()
    if bundled is not None:
        return bundled
    raise FileNotFoundError(
        "no --checkpoint given and this napari-rgmp has no bundled default model: pass "
        "--checkpoint with a napari-rgmp checkpoint or the authors' weights.pth"
    )


def output_path(args: argparse.Namespace) -> tuple[Path, str]:
    """(path, kind) of the command's output (:func:`rgmp_model.io.outputs.output_path`)."""
    from rgmp_model.io.outputs import output_path as path_of

    return path_of(args.images, args.out, args.format)


def read_keyframes(args: argparse.Namespace, view: Any) -> dict[int, dict[int, np.ndarray]]:
    """The keyframes of ``--labels`` (:func:`rgmp_model.io.keyframes.read_keyframes`)."""
    from rgmp_model.io.keyframes import read_keyframes as keyframes_of

    return keyframes_of(args.labels, view, images=args.images, reference_frame=args.reference_frame, at=args.at)


def _options(args: argparse.Namespace) -> Any:
    from rgmp_model.inference.options import MULTISCALE, PropagationOptions

    return PropagationOptions(
        direction=args.direction, mode="official" if args.official else "default",
        scales=MULTISCALE if args.multiscale else None, max_size=args.max_size, device=args.device,
        precision=args.precision, flow=args.flow, region=args.region, split_divisions=args.split_divisions,
        adapt=args.adapt, region_crop_size=args.region_crop_size,
    )


def open_writer(out: Path, kind: str, view: Any, dtype: np.dtype) -> Any:
    """The writer of ``view``'s output (:func:`rgmp_model.io.outputs.open_writer`)."""
    from rgmp_model.io.label_io import frame_names
    from rgmp_model.io.outputs import open_writer as writer_of

    if kind == "ctc":
        return writer_of(out, kind, (view.num_frames,), dtype)
    names = frame_names(view.stack.data, view.num_frames) if kind == "png" else None
    return writer_of(out, kind, view.out_shape, dtype, axes=view.out_axes, frame_names=names)


def run_propagate(args: argparse.Namespace, progress: Any = None) -> int:
    """Propagate every stack of IMAGES from its keyframes, writing each frame as it comes. On any
    error or Ctrl-C once the output is open, the frames done are kept in a valid output and the
    exit code is 1 (130 for Ctrl-C), see :func:`keep_partial_output`.

    ``progress``: where the frames and the lines this command prints go, a tqdm-like object
    (``total``, ``update``, ``refresh``, ``write(text, file=...)``, ``close``; ``rgmp batch``'s
    workers pass their own); None: a tqdm bar on stderr once the model has loaded, lines printed."""
    from tqdm import tqdm

    from rgmp_model.inference.labels import ObjectIds
    from rgmp_model.inference.memory import MemoryRetryWarning
    from rgmp_model.inference.session import open_session
    from rgmp_model.io.hyperstack import open_hyperstack
    from rgmp_model.io.outputs import check_not_input, check_output

    step(f"reading the images {args.images}")  # named by an unexpected error's message (rgmp_model.steps)
    images = open_hyperstack(args.images, axes=args.axes)
    view = images.along(args.axis, args.channel)
    out, kind = output_path(args)
    checkpoint = args.checkpoint or default_checkpoint()
    check_not_input(out, [args.images, args.labels, checkpoint], "--out")
    check_output(out, kind, view)
    step(f"reading the labels {args.labels}")
    keyframes = read_keyframes(args, view)  # labels are read and checked before the model loads
    options = _options(args)
    objects = ObjectIds.from_frames([f for keys in keyframes.values() for f in keys.values()])
    dtype = np.result_type(objects.dtype, np.uint16) if options.split_divisions else objects.dtype  # daughters' ids
    started, done, writer, session, notes, bar = time.perf_counter(), 0, None, None, 0, progress
    say = print if progress is None else progress.write
    try:
        with warnings.catch_warnings():  # a retry with less memory is printed once, as a note
            warnings.simplefilter("ignore", MemoryRetryWarning)
            for i, keys in sorted(keyframes.items()):
                step(f"loading the model {checkpoint} and propagating {args.images}")
                session = open_session(checkpoint, view.frames(i), options)
                session.set_keyframes(keys)
                if options.adapt:
                    _adapt(session, tqdm)
                if writer is None:  # once the model has loaded
                    (height, width), info = session.working_size, session.checkpoint
                    say(f"model: {info.path.name} ({info.describe()}) on {session.device}, "
                        f"working size {width}x{height}", file=sys.stdout)
                    writer = open_writer(out, kind, view, dtype)
                if bar is None:  # never an empty bar before the real one
                    bar = tqdm(total=session.total_frames(), unit="frame", desc="propagating")
                else:
                    bar.total += session.total_frames()
                    bar.refresh()
                for t, labels, _ in session.propagate():
                    writer[view.out_index(i, t)] = labels
                    done += 1
                    bar.update(1)
                    notes = _print_notes(session, notes, bar)
                notes = 0
    except BaseException as error:
        if bar is not None:
            bar.close()
        if writer is None or not isinstance(error, Exception | KeyboardInterrupt):
            raise
        return keep_partial_output(error, writer, out, kind, done, bar.total if bar and view.count == 1 else None,
                                   getattr(args, "debug", False), say)
    if bar is not None:
        bar.close()
    if kind == "ctc":
        writer.parents = dict(getattr(session, "divisions", None) or {})
    writer.close()
    elapsed = time.perf_counter() - started
    where = f" in {len(keyframes)} {view.along_name} stacks along {view.other_name}" if view.count > 1 else ""
    keys = sum(len(k) for k in keyframes.values())
    say(f"{done} frames ({keys} keyframe(s), {len(objects)} object(s)){where} in {elapsed:.1f} s "
        f"({done / elapsed:.2f} frames/s) -> {out}", file=sys.stdout)
    return 0


def _adapt(session: Any, tqdm: Any) -> None:
    """Test-time adaptation of the session's network to its keyframes, with a progress bar."""
    with tqdm(total=session.options.adapt, unit="it", desc="adapting to the keyframes") as bar:
        def progress(iteration: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        session.adapt(on_progress=progress)


def _print_notes(session: Any, printed: int, bar: Any) -> int:
    """Print the session's new notes (e.g. a retry at a smaller working size) above the bar."""
    notes = list(getattr(session, "notes", ()))
    for note in notes[printed:]:
        bar.write(f"rgmp propagate: note: {note}", file=sys.stderr)
    return len(notes)


def _next_step(error: BaseException, out: Path, kind: str) -> str:
    """What to do after ``error``: the cause's remedy, then run again."""
    import errno

    again = "run the command again " + ("with a new --out folder (a CTC result folder must be empty)"
                                        if kind == "ctc" else "(it replaces the output)")
    if isinstance(error, KeyboardInterrupt):
        return f"to propagate the whole stack, {again}"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on the disk of {out} or choose --out on another disk, then {again}"
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"choose --out in a folder you can write to, then {again}"
    return f"fix the problem above, then {again}"


def keep_partial_output(error: BaseException, writer: Any, out: Path, kind: str, done: int, total: int | None,
                        debug: bool = False, say: Callable[..., Any] = print) -> int:
    """After ``error`` (or Ctrl-C) part-way: finalise the output with the ``done`` frames written (a
    TIFF or zarr store that opens, the PNGs written, a CTC folder with res_track.txt), say on stderr
    (through ``say(text, file=...)``) what was kept, where and what to do next, and return the exit
    code (130 Ctrl-C, 1 otherwise). A second Ctrl-C cannot interrupt the finalising. With ``debug``
    the error is raised afterwards."""
    from rgmp_model.cli_errors import EXIT_ERROR, EXIT_INTERRUPTED, user_message

    interrupted = isinstance(error, KeyboardInterrupt)
    lines = [f"rgmp propagate: {'' if interrupted else 'error: '}{user_message(error)}"]
    with sigint_ignored():
        try:
            if done == 0:
                if hasattr(writer, "abort"):
                    writer.abort()  # nothing finished: no empty output in place of an earlier one
                lines.append(f"no frame was finished: nothing was written to {out}")
            else:
                writer.close()
                of = f" of {total}" if total else ""
                rest = {"png": "frames not reached have no PNG", "ctc": "masks of frames not reached are empty"}
                lines.append(f"kept the {done}{of} frames done in {out} ({rest.get(kind, 'frames not reached are 0')})")
        except Exception as second:  # e.g. the disk is still full: the frames on disk stay as they are
            lines.append(f"the {done} frames done are on disk in {out}, but finishing the output failed: "
                         f"{user_message(second)}")
    lines.append(_next_step(error, out, kind))
    say("\n".join(lines), file=sys.stderr)
    if debug:
        raise error
    return EXIT_INTERRUPTED if interrupted else EXIT_ERROR


class sigint_ignored:
    """Ctrl-C ignored inside the block (main thread only; elsewhere a no-op)."""

    def __enter__(self) -> None:
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: signals cannot be changed there
            pass

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
