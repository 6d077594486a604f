"""The one checkpoint loader (and the writer of the project's own format).

Two file layouts are read, both with ``torch.load(map_location="cpu", weights_only=True)`` and a
strict ``load_state_dict``:

- the project's format: a dict with ``format``, ``format_version``, ``config`` (backbone, decoder
  channels), ``state_dict``, ``metadata`` (recipe, data, iterations, date, ...) and the ``sha256``
  of the weights;
- the authors' released ``weights.pth``: a ``nn.DataParallel`` state dict of their ``RGMP`` module
  (keys ``module.Encoder.*`` / ``module.Decoder.*``, saved by PyTorch 0.3.1, so without BatchNorm
  ``num_batches_tracked``). Its names are mapped onto ours; it is always ResNet-50 / 256 channels.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from rgmp_model.nn.file_records import check_file_record
from rgmp_model.nn.network import RGMP, ModelConfig

CHECKPOINT_FORMAT = "napari-rgmp-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

# Authors' module names -> ours, one dotted path component at a time.
_AUTHORS_NAMES = {
    "Encoder": "encoder",
    "Decoder": "decoder",
    "conv1_p": "conv1_mask",
    "GC": "global_conv",
    "convG1": "residual.conv1",
    "convG2": "residual.conv2",
    "RF4": "refine4",
    "RF3": "refine3",
    "RF2": "refine2",
    "convFS1": "skip_conv1",
    "convFS2": "skip_conv2",
    "convFS3": "skip_conv3",
    "convMM1": "merge_conv1",
    "convMM2": "merge_conv2",
}
_LISTED_KEYS = 12  # how many missing/unexpected keys an error message lists


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file holds besides the weights."""

    path: Path
    config: ModelConfig
    source: str  # "napari-rgmp", "authors" (their weights.pth) or "state-dict" (a bare one)
    sha256: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def working_size(self) -> int | None:
        """The working size (longer side, px) the model was made for, when its metadata says."""
        value = self.metadata.get("working_size")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def describe(self) -> str:
        """One line for a user: backbone, decoder width, origin and the main metadata."""
        parts = [f"{self.config.backbone}, decoder {self.config.decoder_channels}"]
        if self.source == "authors":
            parts.append("authors' RGMP weights (non-commercial research use)")
        for key in ("recipe", "iterations", "date"):
            if key in self.metadata:
                parts.append(f"{key}: {self.metadata[key]}")
        return "; ".join(parts)


def state_dict_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 over the sorted (name, dtype, shape, bytes) of every tensor."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model: RGMP,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` in the project's format, atomically (temporary file + rename).

    ``metadata`` should say how the weights were made (recipe, data, iterations, ...); ``date``
    is filled in when absent. ``dtype=torch.float16`` halves the file (floats only).
    """
    path = Path(path)
    state = OrderedDict()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").clone()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor
    meta = dict(metadata or {})
    meta.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "metadata": meta,
        "sha256": state_dict_sha256(state),
    }
    atomic_save(payload, path)
    return path


def atomic_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves a
    half-written file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[RGMP, CheckpointInfo]:
    """Load a checkpoint (project format or the authors' ``weights.pth``) into a new network.

    Returns the network in eval mode on ``device`` and its :class:`CheckpointInfo`.
    Raises FileNotFoundError for a missing file and ValueError (naming the file and the missing /
    unexpected keys) for a wrong, truncated or foreign one.
    """
    path = Path(path)
    config, state_dict, info = _read(path)
    model = RGMP(config)
    # Weights stored in half precision are loaded as float32 (the model's own dtype).
    state_dict = OrderedDict(
        (k, v.float() if v.is_floating_point() else v) for k, v in state_dict.items()
    )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # e.g. shape mismatches
        raise ValueError(f"{path}: the weights do not fit a {config.backbone} RGMP network: {error}") from error
    return model.to(device).eval(), info


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """The config, origin, hash and metadata of a checkpoint, validated like ``load_checkpoint``
    but without building the network."""
    return _read(Path(path))[2]


def _read(path: Path) -> tuple[ModelConfig, "OrderedDict[str, Tensor]", CheckpointInfo]:
    """Read and check a checkpoint file: its layout, hash and key names (against a network
    built on the meta device, which costs no memory)."""
    config, state_dict, info = _read_payload(path)
    with torch.device("meta"):
        expected = RGMP(config).state_dict()
    missing, unexpected = _key_mismatch(expected, state_dict)
    if missing or unexpected:
        raise ValueError(_mismatch_message(path, info.source, missing, unexpected))
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in state_dict.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:  # checked before anything of the claimed size is allocated
        raise ValueError(f"{path}: the weights do not fit a {config.backbone} RGMP network as its config describes: "
                         f"{_listing(wrong)}; the file is damaged or was edited")
    wrong = [f"{k} {v.dtype} (expected {expected[k].dtype})" for k, v in state_dict.items()
             if v.is_floating_point() != expected[k].is_floating_point() or v.is_complex() or v.dtype == torch.bool]
    if wrong:
        raise ValueError(f"{path}: weights of the wrong type: {_listing(wrong)}; the file is damaged or was edited: "
                         "export it again")
    non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise ValueError(f"{path} holds NaN or infinite weights ({_listing(non_finite)}): it comes from a "
                         "training run that diverged; use an earlier checkpoint of that run")
    return config, state_dict, info


def read_torch_file(path: str | os.PathLike, advice: str = "download or export it again") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, the one way the project reads a
    .pt file: tensors and plain data only, so a file that would run code is refused unread.

    Raises ValueError naming ``path``: a file holding other Python objects is called unsafe (and
    torch's advice to turn the protection off is not repeated); a truncated or foreign file is
    called damaged, followed by ``advice`` (what to do about it).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: check the path") from None
    except Exception as error:  # truncated file, not a torch file, disallowed pickle content
        # torch's own text names its internals and may advise disabling the protection: not repeated
        # only a pickle naming a callable (GLOBAL) is a code risk; random bytes fail the same
        # unpickler on an unsupported operand, which is damage, not danger
        if "Weights only load failed" in str(error) and "GLOBAL" in str(error):
            why = ("it holds Python objects other than weights, which could run code when loaded, so it was "
                   "refused unread. Use only checkpoints exported by napari-rgmp (or the authors' weights.pth)")
        else:
            why = f"it may be truncated or not a checkpoint at all: {advice}"
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {why}.") from error


def _read_payload(path: Path) -> tuple[ModelConfig, "OrderedDict[str, Tensor]", CheckpointInfo]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: check the path")
    check_file_record(path)
    payload = read_torch_file(path)
    if not isinstance(payload, Mapping) or not payload:
        raise ValueError(f"{path} holds a {type(payload).__name__}, not an RGMP checkpoint")
    if payload.get("format") == CHECKPOINT_FORMAT:
        return _read_project_format(path, payload)
    if all(isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()):
        state_dict, source = _from_authors_layout(OrderedDict(payload))
        config = _infer_config(state_dict)
        return config, state_dict, CheckpointInfo(path, config, source, state_dict_sha256(payload))
    raise ValueError(
        f"{path} is neither a napari-rgmp checkpoint nor a state dict (its keys: "
        f"{_listing(sorted(map(str, payload)))}); save it with rgmp_model.save_checkpoint"
    )


def _read_project_format(
    path: Path, payload: Mapping[str, Any]
) -> tuple[ModelConfig, "OrderedDict[str, Tensor]", CheckpointInfo]:
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version!r}; this napari-rgmp reads version "
            f"{CHECKPOINT_FORMAT_VERSION}: upgrade napari-rgmp"
        )
    for key in ("config", "state_dict", "sha256"):
        if key not in payload:
            raise ValueError(f"{path} is a napari-rgmp checkpoint without {key!r}: the file is damaged")
    config = _config_of(path, payload["config"])
    state_dict = _tensors_of(path, payload["state_dict"])
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{path}: its metadata is a {type(metadata).__name__}, not a mapping: the file is damaged "
                         "or was edited; export it again")
    digest = state_dict_sha256(state_dict)
    if digest != payload["sha256"]:
        raise ValueError(
            f"{path}: the weights' sha256 {digest[:12]}... differs from the recorded "
            f"{str(payload['sha256'])[:12]}...: the file is corrupted, copy it again"
        )
    info = CheckpointInfo(path, config, "napari-rgmp", digest, dict(metadata))
    return config, state_dict, info


def _config_of(path: Path, values: Any) -> ModelConfig:
    """The checkpoint's ``config`` entry as a ModelConfig, or a ValueError naming the file."""
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise ValueError(f"{path}: its config is a {type(values).__name__}, not a mapping of names: the file is "
                         "damaged or was edited; export it again")
    try:
        return ModelConfig.from_dict(dict(values))
    except (TypeError, ValueError) as error:  # unknown keys, a list as the backbone, channels as text, ...
        raise ValueError(f"{path}: its config {dict(values)!r} does not describe an RGMP network ({error}): the "
                         "file is damaged or was edited; export it again") from error


def _tensors_of(path: Path, values: Any) -> "OrderedDict[str, Tensor]":
    """The checkpoint's ``state_dict`` entry, every key a name and every value a tensor, or a
    ValueError naming the file and the first keys that are not."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{path}: its state_dict is a {type(values).__name__}, not a mapping of weights: the "
                         "file is damaged or was edited; export it again")
    wrong = [f"{k!r} ({type(v).__name__})" for k, v in values.items()
             if not isinstance(k, str) or not isinstance(v, Tensor) or v.layout != torch.strided or v.is_meta]
    if wrong:
        raise ValueError(f"{path}: its state_dict holds values that are not tensors: {_listing(wrong)}; the file is "
                         "damaged or was edited: export it again")
    return OrderedDict(values)


def _from_authors_layout(
    state_dict: "OrderedDict[str, Tensor]",
) -> tuple["OrderedDict[str, Tensor]", str]:
    """Strip DataParallel's ``module.`` and rename the authors' modules to ours. Returns the
    state dict and its origin: "authors", or "state-dict" for any other bare state dict (which
    passes through unchanged)."""
    if all(k.startswith("module.") for k in state_dict):
        state_dict = OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    if not any(k.split(".", 1)[0] in ("Encoder", "Decoder") for k in state_dict):
        return state_dict, "state-dict"
    renamed = OrderedDict(
        (".".join(_AUTHORS_NAMES.get(part, part) for part in k.split(".")), v)
        for k, v in state_dict.items()
    )
    return renamed, "authors"


def _infer_config(state_dict: Mapping[str, Tensor]) -> ModelConfig:
    """Encoder (backbone) and decoder width of a bare state dict in our naming. Anything unrecognised gets
    the published ResNet-50 / 256 configuration, so the strict load names what does not fit."""
    pred = state_dict.get("decoder.pred2.weight")
    channels = int(pred.shape[1]) if pred is not None and pred.dim() == 4 else 256
    if "encoder.stem_conv.weight" in state_dict:  # EfficientNet-Lite: Lite2 has 21 blocks, Lite0 16
        backbone = "efficientnet_lite2" if "encoder.blocks.20.project.0.weight" in state_dict else "efficientnet_lite0"
    elif "encoder.res2.0.conv3.weight" in state_dict:  # bottleneck blocks
        backbone = "resnet50"
    elif "encoder.res2.0.conv2.weight" in state_dict:  # basic blocks: 18 or 34 layers
        backbone = "resnet34" if "encoder.res3.3.conv1.weight" in state_dict else "resnet18"
    else:
        backbone = "resnet50"
    return ModelConfig(backbone, channels)


def _key_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(given)), sorted(set(given) - set(expected))


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LISTED_KEYS else "")


def _mismatch_message(path: Path, source: str, missing: list[str], unexpected: list[str]) -> str:
    what = "the authors' weights.pth layout" if source == "authors" else "an RGMP network"
    lines = [f"{path} does not fit {what}:"]
    if missing:
        lines.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        lines.append(f"unexpected keys: {_listing(unexpected)}")
    lines.append("Is it an RGMP checkpoint (napari-rgmp's own, or the authors' weights.pth)?")
    return "\n".join(lines)
