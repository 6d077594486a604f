"""What a label image is, as opposed to a photograph: the one owner of these rules.

- :func:`looks_like_label_image`: whether an integer frame holds ids (napari's reader asks it);
- :func:`check_label_values`: a frame given as labels whose values are a photograph's grey levels is
  refused (``rgmp propagate`` asks it for every keyframe);
- ``MAX_COLOUR_IDS`` and :func:`_photo_refusal`: the colour and JPEG refusals of
  :func:`rgmp_model.io.label_io.read_label_image`, with the one message that says what labels are.
"""

from __future__ import annotations

import numpy as np

MAX_COLOUR_IDS = 1024  # distinct colours beyond which an RGB(A) "label image" is taken for a photograph
PHOTO_MIN_IDS = 64  # a label image with at most this many ids is never taken for a photograph
MIN_OBJECT_FILL = 0.1  # the median id's share of its bounding box below which ids are taken for grey levels


def _photo_refusal(name: str, count: int, why: str) -> ValueError:
    return ValueError(f"{name} does not look like a label image: {why} ({count} distinct values). Labels are "
                      "integer object ids, one value per object and 0 for the background, saved losslessly: a "
                      "palette PNG (as DAVIS annotations), a grey PNG or an integer TIFF")


def check_label_values(labels: np.ndarray, name: str) -> None:
    """Refuse (ValueError) an (H, W) integer label frame whose values are a photograph's grey levels
    (or lossy compression's) rather than object ids: more than ``PHOTO_MIN_IDS`` ids whose median
    covers under 4 pixels or fills under ``MIN_OBJECT_FILL`` of its bounding box (an object's pixels
    lie together, a grey level's are scattered over the picture). Judged on a grid of at most
    512 x 512 of the frame's pixels; no allocation is sized by an id's value."""
    from scipy.ndimage import find_objects

    frame = np.asarray(labels)
    step = max(1, int(np.ceil(np.sqrt(frame.size / 512**2))))
    sample = frame[::step, ::step]
    values, inverse, counts = np.unique(sample, return_inverse=True, return_counts=True)
    objects = values != 0
    if int(objects.sum()) <= PHOTO_MIN_IDS:
        return
    boxes = find_objects(inverse.reshape(sample.shape).astype(np.int64) + 1)  # one box per distinct value
    areas = np.array([(b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes])
    pixels, fill = float(np.median(counts[objects])) * step**2, float(np.median((counts / areas)[objects]))
    if pixels < 4 or fill < MIN_OBJECT_FILL:
        count = len(np.unique(frame)) if step > 1 else len(values)
        raise _photo_refusal(name, count, f"its values are scattered like a photograph's grey levels (the median "
                             f"value covers {pixels:.0f} pixel(s), {fill:.0%} of its bounding box; an object's "
                             "pixels lie together)")


LABEL_NAME_HINTS = ("label", "mask", "annotation", "seg", "truth", "gt", "man_track")


def looks_like_label_image(frame: np.ndarray, name: str = "") -> bool:
    """Whether an (H, W) array holds object ids rather than intensities: an integer grey frame
    whose most common value is 0 (the background) and that has few distinct values (<= 64 in
    8-bit data, <= 4096 in wider integers), or whose file ``name`` says labels/mask/segmentation
    (then any integer frame). Photographs and fluorescence frames have thousands of values and
    rarely a background of exact zeros."""
    frame = np.asarray(frame)
    if frame.ndim != 2 or frame.dtype.kind not in "iub" or frame.size == 0:
        return False
    if any(hint in name.lower() for hint in LABEL_NAME_HINTS):
        return True
    sample = frame[:: max(1, frame.shape[0] // 256), :: max(1, frame.shape[1] // 256)]
    values, counts = np.unique(sample, return_counts=True)
    few = len(values) <= (64 if frame.dtype.itemsize == 1 else 4096)
    return few and values[np.argmax(counts)] == 0
