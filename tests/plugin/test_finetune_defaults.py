"""The Fine-tune dock's defaults (xvfb): labels never default to the plugin's own output, a warning
when it is chosen, the checkpoint in the user model folder named from the image and the date, in
fp16, the training folder in the cache; out of memory leaves the base and the output untouched."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import numpy as np
import torch

from training.run_folders import finetune_runs_dir
from napari_rgmp.finetune_job import OUT_OF_MEMORY
from napari_rgmp.layers import image_frames
from napari_rgmp.output_store import OutputPolicy, is_propagated, prepare_output_layer
from rgmp_model.nn.models import user_models_dir
from tests.helpers.finetune_dock import WAIT_MS, base, configure, make_widget, notes, video, wait_done  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def propagated_layer(viewer, source_name: str = "masks"):
    """The Propagate dock's output layer for ``source_name``, made by the dock's own code."""
    frames = image_frames(viewer.layers["frames"])
    return prepare_output_layer(viewer, viewer.layers[source_name], None, frames, OutputPolicy(), "(new layer)")


def test_labels_never_default_to_propagated_output(make_widget, notes) -> None:
    viewer, widget = make_widget()
    output = propagated_layer(viewer)  # newest Labels layer
    assert is_propagated(output) and output.name == "masks propagated"
    assert widget.labels_combo.currentText() == "masks"  # a new propagated layer does not take the choice
    from napari_rgmp.finetune_widget import FinetuneWidget

    fresh = FinetuneWidget(viewer)  # opened after the run: still the user's own layer
    assert fresh.labels_combo.currentText() == "masks" and not fresh.labels_note.isVisibleTo(fresh)
    fresh.deleteLater()
    output.name = "copy"  # renamed: the metadata mark still says what it is
    assert is_propagated(output)
    assert not any("own output" in m for m in notes())


def test_choosing_propagated_output_warns(make_widget, qtbot, notes) -> None:
    viewer, widget = make_widget()
    propagated_layer(viewer)
    widget.labels_combo.set_layer("masks propagated")
    assert any("training on the model's own output" in m for m in notes()), notes()
    assert widget.labels_note.isVisibleTo(widget) and "own output" in widget.labels_note.text()
    widget.labels_combo.set_layer("masks")
    assert not widget.labels_note.isVisibleTo(widget)


def test_only_propagated_labels_means_no_default(make_widget, notes) -> None:
    viewer, widget = make_widget(labels=None)
    viewer.add_labels(np.zeros(viewer.layers["frames"].data.shape[:3], np.uint16), name="objects")
    output = propagated_layer(viewer, "objects")
    viewer.layers.remove("objects")
    assert widget.labels_combo.layer() is None and "masks" not in widget.labels_combo.currentText()
    assert output.name in [widget.labels_combo.itemText(i) for i in range(widget.labels_combo.count())]
    assert widget.run() is None and any("choose a Labels layer" in m for m in notes())
    viewer.add_labels(np.zeros(output.data.shape, np.uint16), name="painted")
    assert widget.labels_combo.currentText() == "painted"  # the user's own layer, as soon as there is one


def test_default_output_is_in_the_user_model_folder(make_widget, base) -> None:
    viewer, widget = make_widget()
    today = datetime.date.today().isoformat()
    out = Path(widget.output_path.text())
    assert out == user_models_dir() / f"frames-finetuned-{today}.pt"
    assert "site-packages" not in str(out) and ROOT not in out.parents
    user_models_dir().mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"taken")
    viewer.layers["frames"].name = "cells"
    widget.image_combo.set_layer("cells")
    assert Path(widget.output_path.text()) == user_models_dir() / f"cells-finetuned-{today}.pt"
    (user_models_dir() / f"cells-finetuned-{today}.pt").write_bytes(b"taken")
    widget._refresh_output()
    assert Path(widget.output_path.text()).name == f"cells-finetuned-{today}-2.pt"  # never over a file


def test_run_saves_fp16_in_the_model_folder_and_keeps_the_log_in_the_cache(make_widget, qtbot, base) -> None:
    from napari_rgmp.checkpoints import registry

    _, widget = make_widget()
    configure(widget, base, user_models_dir() / "unused.pt", iterations=2)
    widget._output_edited = False
    widget._refresh_output()  # back to the default output
    out = Path(widget.output_path.text())
    assert widget.run() is not None
    wait_done(qtbot, widget)
    state = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert out.parent == user_models_dir() and out.resolve() in registry.paths()
    work = finetune_runs_dir() / out.stem
    assert (work / "train_log.csv").is_file() and not (work / "checkpoints").exists()
    assert not (work / "model.pt").exists()  # only the fp16 copy, in the model folder
    assert str(work) in widget.status_label.text() and str(out) in widget.status_label.text()


def test_out_of_memory_says_what_to_try_and_leaves_no_output(make_widget, qtbot, base, tmp_path, notes,
                                                             monkeypatch) -> None:
    from training import trainer

    def out_of_memory(*_, **__):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.Trainer, "_forward_backward", out_of_memory)
    before = hashlib.sha256(base.read_bytes()).hexdigest()
    _, widget = make_widget()
    out = tmp_path / "models" / "adapted.pt"
    configure(widget, base, out, iterations=3)
    assert widget.run() is not None
    wait_done(qtbot, widget)
    shown = [m for m in notes() if m.startswith(OUT_OF_MEMORY)]
    assert shown and "batch size (now 2)" in shown[0] and "crop size (now 64 px)" in shown[0], notes()
    assert "base checkpoint is unchanged" in shown[0] and "data.crop_size" not in shown[0]
    assert hashlib.sha256(base.read_bytes()).hexdigest() == before
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))  # nothing half-written
    assert not (finetune_runs_dir() / "adapted" / "checkpoints").exists()
    assert widget.run_button.isEnabled() and widget.status_label.text().startswith("failed: " + OUT_OF_MEMORY)
