"""Tooltips of the Propagate dock's controls (attribute name -> text), one place to read them all."""

from __future__ import annotations

TIPS: dict[str, str] = {
    "image_combo": "the image stack to propagate through (an Image layer: time-lapse, video or z-stack)",
    "axis_combo": "the slider the frames run along (named as in the viewer); the other sliders stay at the "
                  "viewer's position",
    "labels_combo": "the Labels layer with the objects painted on one or more frames: every frame holding "
                    "labels is a keyframe; a 2-D layer (one frame's labels) is the keyframe of the frame shown when "
                    "it was chosen. It is never modified",
    "open_labels_button": "open labels you already have as a new Labels layer: a label image or stack (a DAVIS "
                          "annotation such as 00000.png, a label TIFF) or a folder of label images",
    "flat_frame_button": "a 2-D Labels layer holds one frame's labels: make it the keyframe of the frame the viewer "
                         "shows now",
    "boxes_combo": "instead of painted labels: a Shapes layer with one rectangle per object on the keyframe; "
                   "the network turns each box into a mask",
    "keyframes_label": "the frames holding labels (or boxes): propagation starts from each of them",
    "status_label": "what the run is doing, and how the last run ended",
    "direction_combo": "both: from every keyframe forward and backward to the next keyframe; forward / backward: "
                       "one direction only",
    "device_combo": "where the network runs: auto picks a GPU (CUDA or Apple MPS) when there is one, else the CPU",
    "max_size_spin": "the longer image side the network works at (frames are resized to it, results back to full "
                     "size). It follows the chosen model's size until you change it (small objects, e.g. nuclei under "
                     "32 px there, then get more: up to full size or 512 px); smaller is faster and uses "
                     "less memory, full size is slowest",
    "multiscale_check": "run each frame at 0.5, 0.75 and 1 times the working size and average: a little more "
                        "accurate, about three times slower",
    "region_combo": "region mode tracks each object in its own full-resolution crop, for many small objects "
                    "(cells); auto decides per keyframe from the objects' sizes, on / off force it",
    "split_check": "in region mode, a part that separates from an object (a dividing cell) gets a new id; the "
                   "parent of each new id is kept for the Cell Tracking Challenge export",
    "adapt_check": "before propagating, fine-tune a copy of the model on this stack's keyframes (test-time "
                   "adaptation, in memory: the model file is not changed). About a minute on a laptop CPU, seconds "
                   "on a GPU; a correction reuses it, changing a keyframe it learnt from adapts again",
    "output_combo": "where the result goes: a new Labels layer '<labels> propagated', or an existing Labels layer "
                    "of the same shape (its frames of this stack are overwritten)",
    "run_button": "propagate the labels through the whole stack (the viewer stays usable while it runs)",
    "cancel_button": "stop after the current frame; the frames done stay in the output layer",
    "least_button": "show the propagated frame with the lowest confidence: the first one to check",
    "keyframe_button": "after correcting the shown frame of the output layer with the brush: propagate again "
                       "from it, up to the neighbouring keyframes only",
}
