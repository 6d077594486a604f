"""Training pairs from the labelled frames (keyframes) of one stack: fine-tuning on a user's stack
(:mod:`training.finetune`) and test-time adaptation (:mod:`rgmp_model.adapt.adapt`) sample them.

    stills = KeyframeStills(FrameStack(images), {0: labels0, 40: labels40})
    pairs = KeyframePairDataset(stills, crop_size=keyframe_crop((256, 256), height, width))
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from rgmp_model.constants import NETWORK_STRIDE
from rgmp_model.inference.frames import FrameStack

from .augment import color_jitter, crop_transform, deform_previous_mask
from .pairs import ImageSource, StaticPairDataset, region_view

__all__ = ["MIN_OBJECT_PIXELS", "KeyframePairDataset", "KeyframeStills", "keyframe_crop"]

MIN_OBJECT_PIXELS = 16  # objects of a user's stack smaller than this are not trained on


class KeyframeStills:
    """The keyframes of a stack as stills: item i -> (frame float32 (H, W, 3) in [0, 1], as the
    network sees it (:class:`FrameStack`), labels (H, W) as given) of the i-th keyframe in frame order.
    ``keyframes``: {frame index: (H, W) integer labels}."""

    def __init__(self, frames: FrameStack, keyframes: Mapping[int, np.ndarray]) -> None:
        if not keyframes:
            raise ValueError("no labelled frame: label at least one frame to train on")
        self.frames = frames
        self.order = sorted(int(t) for t in keyframes)
        self.labels = {int(t): np.asarray(keyframes[t]) for t in self.order}
        for t, labels in self.labels.items():
            if labels.shape != (frames.height, frames.width):
                raise ValueError(f"labels of frame {t} are {labels.shape}, the frames {(frames.height, frames.width)}")

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.order[index]
        return self.frames[t], self.labels[t]


def keyframe_crop(crop_size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """The crop trained on: ``crop_size`` no larger than the frame (smaller frames are padded) and
    a multiple of the network's stride."""
    return tuple(max(NETWORK_STRIDE, min(size, frame) // NETWORK_STRIDE * NETWORK_STRIDE)  # type: ignore[return-value]
                 for size, frame in zip(crop_size, (height, width)))



class KeyframePairDataset(StaticPairDataset):
    """Item k (deterministic in (seed, k)): with probability ``pair_probability`` (when there are
    two or more keyframes) a real pair: reference = keyframe a with one object's
    mask, target = keyframe b with the same object's mask, previous mask = that mask
    deformed, all in one crop window around the object in both frames; otherwise stage-1
    simulation on one keyframe (:class:`StaticPairDataset`)."""

    def __init__(self, source: ImageSource, crop_size: tuple[int, int] = (256, 256), seed: int = 0,
                 length: int = 100_000, box_probability: float = 0.1, paste_probability: float = 0.0,
                 min_object_pixels: int = MIN_OBJECT_PIXELS, pair_probability: float = 0.5,
                 crop_contrast_probability: float = 0.0) -> None:
        super().__init__([source], crop_size=crop_size, seed=seed, length=length, box_probability=box_probability,
                         paste_probability=paste_probability, min_object_pixels=min_object_pixels,
                         crop_contrast_probability=crop_contrast_probability)
        self.source = source
        self.pair_probability = pair_probability if len(source) >= 2 else 0.0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, int(index), 1))
        if rng.random() >= self.pair_probability:
            return super().__getitem__(index)
        for _ in range(self.max_tries):
            a, b = rng.choice(len(self.source), size=2, replace=False)
            (image_a, labels_a), (image_b, labels_b) = self.source[int(a)], self.source[int(b)]
            shared = [i for i in np.unique(labels_a) if i and (labels_a == i).sum() >= self.min_object_pixels
                      and (labels_b == i).sum() >= self.min_object_pixels]
            if shared:
                break
        else:  # no object labelled on two frames: simulation only
            return super().__getitem__(index)
        object_id = rng.choice(shared)
        mask_a, mask_b = labels_a == object_id, labels_b == object_id
        window = self._window(rng, mask_a | mask_b)
        crop = crop_transform(window, self.crop_size)
        fill = np.median(image_a[::8, ::8].reshape(-1, 3), axis=0)
        target_mask = (crop.apply_to_image(mask_b.astype(np.float32)) >= 0.5).astype(np.float32)
        target = color_jitter(rng, crop.apply_to_image(image_b, fill))
        reference, target = region_view(np.random.default_rng((self.seed, int(index), 11)),
                                        crop.apply_to_image(image_a, fill, channels_first=True),
                                        np.ascontiguousarray(target.transpose(2, 0, 1)), self.crop_contrast_probability)
        return {
            "reference_frame": torch.from_numpy(np.ascontiguousarray(reference)),
            "reference_mask": torch.from_numpy((crop.apply_to_image(mask_a.astype(np.float32)) >= 0.5).astype(np.float32)),
            "frame": torch.from_numpy(np.ascontiguousarray(target)),
            "mask": torch.from_numpy(target_mask),
            "previous_mask": torch.from_numpy(deform_previous_mask(rng, target_mask, box_probability=self.box_probability)),
        }
