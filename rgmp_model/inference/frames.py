"""Image stacks as the network sees them: validated, read one frame at a time, normalised."""

from __future__ import annotations

from typing import Any

import numpy as np

# Percentiles of the stack's intensities mapped to 0 and 1 for non-uint8 data.
DEFAULT_PERCENTILES = (0.5, 99.5)
_SAMPLE_FRAMES = 16  # frames read to estimate the percentiles
_SAMPLE_VALUES = 1 << 18  # values kept per sampled frame


class FrameStack:
    """A read-only view of an image stack: (T, H, W) grey or (T, H, W, C) with C in 1, 3, 4.

    ``frames`` may be any array-like with ``shape``, ``dtype`` and integer indexing (numpy array,
    memmap, dask array, zarr, a lazy folder reader); only the frames asked for are read.
    uint8 frames are divided by 255; any other numeric type is mapped to [0, 1] by the stack's
    0.5 and 99.5 percentiles (estimated from up to 16 evenly spaced frames) and clipped.
    Grey frames are repeated to 3 channels; a 4th (alpha) channel is dropped.
    """

    def __init__(self, frames: Any, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> None:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", None)
        if shape is None or dtype is None:
            raise ValueError(
                f"frames must be an array (numpy, dask, memmap ...) with shape and dtype, got "
                f"{type(frames).__name__}: wrap it with numpy.asarray"
            )
        dtype = np.dtype(dtype)
        if dtype.kind not in "uif":
            raise ValueError(
                f"frames have dtype {dtype}, which is not a numeric image type: give uint8, "
                f"uint16 or float images"
            )
        shape = tuple(int(n) for n in shape)
        if len(shape) == 4 and shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"frames have shape {shape}: a 4-D stack must be (T, H, W, C) with C = 1, 3 or 4 "
                f"channels last; for a 4-D volume pick the axis to propagate along first"
            )
        if len(shape) not in (3, 4) or min(shape) < 1:
            raise ValueError(
                f"frames have shape {shape}: expected (T, H, W) grey or (T, H, W, C) colour "
                f"with at least one frame"
            )
        self._frames = frames
        self.shape = shape
        self.dtype = dtype
        self.num_frames, self.height, self.width = shape[:3]
        self._values: np.ndarray | None = None  # see _table
        if dtype == np.uint8:
            self.low, self.high = 0.0, 255.0
        else:
            self.low, self.high = self._percentiles(percentiles)

    def __len__(self) -> int:
        return self.num_frames

    @property
    def is_grey(self) -> bool:
        """Whether the stack has one channel: (T, H, W) or (T, H, W, 1)."""
        return len(self.shape) == 3 or self.shape[-1] == 1

    def raw(self, index: int) -> np.ndarray:
        """Frame ``index`` as stored: (H, W) or (H, W, C)."""
        if not -self.num_frames <= index < self.num_frames:
            raise IndexError(f"frame {index} is outside a stack of {self.num_frames} frames")
        frame = np.asarray(self._frames[index])
        if frame.shape != self.shape[1:]:
            raise ValueError(f"frame {index} has shape {frame.shape}, expected {self.shape[1:]}")
        return frame

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 RGB in [0, 1], shape (H, W, 3)."""
        frame = self.normalised(index)
        return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame

    def normalised(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 in [0, 1]: (H, W, 1) for a grey stack (not repeated to RGB;
        the engine repeats what it sends to the network, after cropping or resizing), else
        (H, W, 3). The values are those of ``self[index]``; uint8 and uint16 frames go through a
        table of their 256 / 65536 values (one lookup per pixel)."""
        raw = self.raw(index)
        table = self._table()
        if table is not None:
            frame = np.take(table, raw)
        else:
            frame = raw.astype(np.float32)
            frame = np.nan_to_num(frame, nan=self.low, posinf=self.high, neginf=self.low)
            frame = np.clip((frame - self.low) / (self.high - self.low), 0.0, 1.0, out=frame)
        if frame.ndim == 2:
            return frame[..., None]
        return frame if frame.shape[-1] == 1 else np.ascontiguousarray(frame[..., :3])

    def _table(self) -> np.ndarray | None:
        """float32 [0, 1] value of every uint8 / uint16 value (None for other types), made once."""
        if self.dtype not in (np.uint8, np.uint16):
            return None
        if self._values is None:
            values = np.arange(np.iinfo(self.dtype).max + 1).astype(np.float32)
            if self.dtype == np.uint8:
                values *= 1.0 / 255.0
            else:
                values = np.clip((values - self.low) / (self.high - self.low), 0.0, 1.0, out=values)
            self._values = values
        return self._values

    def _percentiles(self, percentiles: tuple[float, float]) -> tuple[float, float]:
        count = min(self.num_frames, _SAMPLE_FRAMES)
        indices = np.unique(np.linspace(0, self.num_frames - 1, count).round().astype(int))
        samples = []
        for index in indices:
            values = self.raw(int(index)).reshape(-1)
            step = max(1, values.size // _SAMPLE_VALUES)
            values = values[::step].astype(np.float64)
            samples.append(values[np.isfinite(values)])
        values = np.concatenate(samples)
        if values.size == 0:
            raise ValueError("frames contain no finite values (all NaN or infinite)")
        low, high = np.percentile(values, percentiles)
        if not high > low:  # a constant stack
            high = low + 1.0
        return float(low), float(high)
