"""The last crashes and silent losses of issue 24, one test each: every case ends in a message
that names the file (and the page, iteration or frame) and says what to do, never a traceback,
and nothing a user owns is lost or changed. (The dock under a user's hands:
tests/test_dock_under_hands.py; checkpoint contents at random: tests/test_checkpoint_hypothesis.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from bad_input_checks import assert_user_message, digest, run_main
from rgmp_model.cli import main

T, H, W = 5, 32, 40
FRAMES = np.stack([((np.add.outer(np.arange(H), np.arange(W)) + 5 * t) % 64 * 4).astype(np.uint8) for t in range(T)])
LABELS = np.zeros((H, W), np.uint16)
LABELS[8:20, 10:24] = 1


def _cut_after_page(path: Path, kept: int) -> None:
    """Cut ``path`` just before page ``kept``'s entry: pages 0..kept-1 whole, the chain broken."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[kept].offset
    path.write_bytes(path.read_bytes()[:offset])


@pytest.mark.parametrize("metadata", ["none", "ome", "shaped", "imagej"])
def test_deflate_tiff_whose_pages_end_early_is_refused_naming_the_frames_read(tmp_path, checkpoint, metadata) -> None:
    """A deflate stack of 5 frames cut after frame 3 (as a 60% copy did): tifffile shows 3 frames
    and only logs the break; without (or with lost) metadata nothing else says 2 are missing."""
    folder = tmp_path / "in"
    folder.mkdir()
    options = {"none": {"metadata": None}, "ome": {"ome": True, "metadata": {"axes": "TYX"}},
               "shaped": {}, "imagej": {"imagej": True, "metadata": {"axes": "TYX"}}}[metadata]
    tifffile.imwrite(folder / "cut.tif", FRAMES, compression="zlib", **options)
    _cut_after_page(folder / "cut.tif", 3)
    tifffile.imwrite(folder / "labels.tif", LABELS)
    before = digest(folder)
    out = tmp_path / "out.tif"
    code, _, err = run_main(main, ["propagate", folder / "cut.tif", "--labels", folder / "labels.tif",
                                   "--checkpoint", checkpoint, "--out", out, "--device", "cpu"])
    assert code == 2, err
    if metadata in ("shaped", "imagej"):  # the metadata's count survives: the message says it
        assert_user_message(err, "cut.tif is truncated", "5 frames but it holds 3")
    else:
        assert_user_message(err, "cut.tif is truncated", "after page 2", "only frames 0-2", "Copy or export the file again")
    assert not out.exists()
    assert digest(folder) == before


def test_tiff_cut_inside_a_page_entry_is_a_message(tmp_path) -> None:
    """A cut inside a page's own entry made tifffile raise struct.error (a traceback)."""
    from rgmp_model.io.stack_io import open_image_stack

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, FRAMES, compression="zlib", imagej=True, metadata={"axes": "TYX"})
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[3].offset
    path.write_bytes(path.read_bytes()[:offset + 10])
    with pytest.raises(ValueError) as caught:
        open_image_stack(path)
    assert_user_message(str(caught.value), "cut.tif", "truncated", "copy or export it again")


def test_complete_deflate_stacks_still_open(tmp_path) -> None:
    from rgmp_model.io.stack_io import open_image_stack

    for options in ({"metadata": None}, {"ome": True, "metadata": {"axes": "TYX"}},
                    {"imagej": True, "metadata": {"axes": "TYX"}}, {}):
        tifffile.imwrite(tmp_path / "whole.tif", FRAMES, compression="zlib", **options)
        np.testing.assert_array_equal(np.asarray(open_image_stack(tmp_path / "whole.tif")), FRAMES)


def test_a_device_torch_knows_but_propagation_cannot_use_is_refused() -> None:
    from rgmp_model import build_rgmp
    from rgmp_model.inference.engine import PropagationSession

    for device in ("meta", "meta:0"):
        with pytest.raises(ValueError, match=rf"device '{device}' cannot run a propagation: use 'auto', 'cpu', 'cuda'"):
            PropagationSession(build_rgmp("resnet18", 8), FRAMES, device=device)
    code, _, err = run_main(main, ["propagate", "x.tif", "--labels", "y.tif", "--out", "o.tif", "--device", "meta"])
    assert code == 2 and "error" in err and "Traceback" not in err
