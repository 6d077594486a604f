"""The last crashes and silent losses of issue 24, one test each: every case ends in a message
that names the file (and the page, iteration or frame) and says what to do, never a traceback,
and nothing a user owns is lost or changed. (The dock under a user's hands:
tests/plugin/test_dock_under_hands.py; checkpoint contents at random: tests/nn/test_checkpoint_hypothesis.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.helpers.bad_input_checks import assert_user_message, digest, run_main
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


# ------------------------------------------------------------------------------- checkpoints and training
def test_a_state_dict_holding_an_int_is_a_checkpoint_error_naming_the_key(tmp_path) -> None:
    import torch

    from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "edited.pt", build_rgmp("resnet18", 8))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["decoder.pred2.bias"] = 3
    torch.save(payload, path)
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path)
    assert_user_message(str(caught.value), "edited.pt", "'decoder.pred2.bias' (int)", "not tensors", "export it again")


def _tiny_training(tmp_path: Path, iterations: int):
    from tests.helpers.tiny_training import TinyPairs, pair_objective, tiny_config
    from training.trainer import Trainer

    return Trainer(tiny_config(tmp_path, iterations=iterations), TinyPairs(), pair_objective, show_progress=False)


def test_resume_from_a_truncated_last_pt_says_which_file_and_what_to_do(tmp_path) -> None:
    _tiny_training(tmp_path, 3).fit()
    state = tmp_path / "checkpoints" / "last.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    cut = state.read_bytes()
    with pytest.raises(ValueError) as caught:
        _tiny_training(tmp_path, 6).fit()
    assert_user_message(str(caught.value), f"{state} cannot be read as a PyTorch checkpoint", "truncated",
                        f"delete {state} (or run with resume=false) to start this stage over")
    assert state.read_bytes() == cut  # left for the user to look at


def test_resume_from_a_planted_code_running_last_pt_is_refused_without_advice_to_unprotect(tmp_path) -> None:
    from tests.helpers.bad_input_checks import hostile_checkpoint

    state = tmp_path / "checkpoints" / "last.pt"
    state.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    hostile_checkpoint(state, marker)
    with pytest.raises(ValueError) as caught:
        _tiny_training(tmp_path, 3).fit()
    message = str(caught.value)
    assert_user_message(message, str(state), "could run code when loaded", "refused unread", "delete")
    assert "weights_only" not in message and "trust" not in message.lower() and "unsafe" not in message.lower()
    assert not marker.exists()


def test_a_disk_full_while_the_training_state_is_written_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    import errno

    import torch

    from training.train_state import CheckpointWriteError

    _tiny_training(tmp_path, 3).fit()
    state = tmp_path / "checkpoints" / "last.pt"
    good = state.read_bytes()
    real_save = torch.save

    def full_disk(payload, stream, *args, **kwargs):
        if isinstance(payload, dict) and "optimizer" in payload and payload["iteration"] == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(payload, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as caught:
        _tiny_training(tmp_path, 6).fit()
    assert_user_message(str(caught.value), f"{state} could not be written at iteration 6", "no space left on the disk",
                        "the previous last.pt (iteration 3) is kept", "start the same command again")
    assert state.read_bytes() == good
    assert not list(state.parent.glob(".last.pt.*.tmp"))  # the half-written temporary is removed


def test_torch_s_own_error_for_a_short_write_is_a_disk_message_too(tmp_path, monkeypatch) -> None:
    """What torch raises when the disk fills up mid-file (the issue's "[enforce fail at
    inline_container.cc:672] . unexpected pos"), through the CLI's message and exit code."""
    import torch

    from rgmp_model.cli_errors import exit_code, user_message

    _tiny_training(tmp_path, 3).fit()
    real_save = torch.save

    def short_write(payload, stream, *args, **kwargs):
        if isinstance(payload, dict) and payload.get("iteration") == 6:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4388")
        return real_save(payload, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(OSError) as caught:
        _tiny_training(tmp_path, 6).fit()
    message = user_message(caught.value)
    assert_user_message(message, "last.pt could not be written at iteration 6", "MiB free: the disk may be full",
                        "(iteration 3) is kept")
    assert "inline_container" not in message and exit_code(caught.value) == 1


def test_finetune_on_stack_refuses_an_existing_folder_as_out_before_training(tmp_path, checkpoint, monkeypatch) -> None:
    from training import finetune
    from training.finetune import finetune_config, finetune_on_stack

    out = tmp_path / "models"
    out.mkdir()
    monkeypatch.setattr(finetune, "load_checkpoint", lambda *a, **k: pytest.fail("the base was loaded"))
    images = FRAMES[:3]
    labels = np.zeros((3, H, W), np.uint16)
    labels[0] = LABELS
    config = finetune_config(checkpoint, out, ["optim.iterations=1", "data.batch_size=1"], output_dir=tmp_path / "work")
    with pytest.raises(ValueError) as caught:
        finetune_on_stack(images, labels, config)
    assert_user_message(str(caught.value), f"{out}", "is a folder: give a file path", "finetuned.pt")
    assert list(out.iterdir()) == [] and not (tmp_path / "work").exists()


def test_a_runtime_error_that_is_not_a_failed_write_is_not_reported_as_a_full_disk(tmp_path) -> None:
    from training.train_state import CheckpointWriteError, writing_checkpoint

    with pytest.raises(RuntimeError, match="illegal memory access") as caught:
        with writing_checkpoint(tmp_path / "last.pt", 3, "nothing was kept"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    assert not isinstance(caught.value, CheckpointWriteError)
    with pytest.raises(CheckpointWriteError, match=r"last.pt could not be written at iteration 3 \(the write failed"):
        with writing_checkpoint(tmp_path / "last.pt", 3, "nothing was kept"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
