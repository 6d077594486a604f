"""Training configuration: frozen dataclasses, one YAML file per stage, ``key=value`` overrides.

    config = load_config("pretrain", ["optim.lr=3e-4", "data.batch_size=8"])   # a bundled config, by name
    config = load_config("my_recipe.yaml")                                     # or any YAML file

Every section and field is typed; YAML values and overrides are converted to the field's type
(so ``optim.lr=1e-4`` is a float although YAML would read it as a string), and unknown keys are
errors that name the key and the allowed ones. ``${NAME}`` in a string is replaced by the
environment variable NAME (an error names it when it is unset).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from rgmp_model.constants import NETWORK_STRIDE

from .sources import SourceSpec

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

STAGES = ("pretrain", "video", "finetune")
CONFIG_DIR = Path(__file__).with_name("configs")  # the stages' YAML files (package data)
CONFIG_SUFFIX = ".yaml"


@dataclass(frozen=True)
class ModelSection:
    backbone: str = "resnet18"
    decoder_channels: int = 64
    imagenet_weights: bool = False  # needs the torchvision weights in the torch cache
    init_checkpoint: str | None = None  # start from these weights (e.g. the stage-1 result)
    train_batchnorm: bool = False  # from scratch: BatchNorm learns, frozen again on export (norm.py)


@dataclass(frozen=True)
class DataSection:
    sources: tuple[SourceSpec, ...] = (SourceSpec("synthetic_video"),)
    crop_size: tuple[int, int] = (256, 256)
    batch_size: int = 4
    num_workers: int = 0
    decoded_cache: str | None = None  # a folder for decoded samples (training/decoded_cache.py); None: off
    length: int = 1_000_000  # samples per epoch of the deterministic dataset
    clip_length: int = 4  # video: frames per clip, the first annotated
    max_skip: int = 3  # video: largest step between clip frames
    max_objects: int = 3  # video: objects per clip
    occluder_probability: float = 0.0  # video: an object of another sequence crosses the clip in front
    crop_contrast_probability: float = 0.0  # video: grey clips stretched per frame as region mode shows crops
    box_probability: float = 0.1  # static: previous mask replaced by the object's box
    paste_probability: float = 0.2  # static: object pasted onto another image

    def __post_init__(self) -> None:
        if len(self.crop_size) != 2 or any(size < NETWORK_STRIDE or size % NETWORK_STRIDE for size in self.crop_size):
            raise ValueError(f"data.crop_size must be multiples of {NETWORK_STRIDE} (the network's stride: it halves "
                             f"the size five times), e.g. [256, 256]; got {list(self.crop_size)}")


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-4
    lr_steps: tuple[int, ...] = ()  # the learning rate is multiplied by lr_gamma at each of these iterations
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    iterations: int = 10_000
    amp: bool = True  # autocast on CUDA only
    amp_dtype: str = "bf16"  # bf16 or fp16 (fp16 uses a gradient scaler)
    grad_clip: float | None = 10.0
    aux_weight: float = 0.5  # weight of the mean loss of the 1/4..1/32 heads
    bptt_frames: int | None = None  # video: detach the recurrence every N frames (None: never)

    def __post_init__(self) -> None:
        steps = self.lr_steps
        if any(b <= a for a, b in zip(steps, steps[1:])) or any(step <= 0 for step in steps):
            raise ValueError(f"optim.lr_steps must be increasing positive iterations, got {list(steps)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"optim.lr_gamma must be in (0, 1], got {self.lr_gamma}")

    def learning_rate(self, iteration: int) -> float:
        """The learning rate of the step that follows ``iteration`` completed steps."""
        return self.lr * self.lr_gamma ** sum(iteration >= step for step in self.lr_steps)


@dataclass(frozen=True)
class ScheduleSection:
    log_every: int = 10
    checkpoint_every: int = 500
    validate_every: int = 1000


@dataclass(frozen=True)
class ValidationSection:
    sources: tuple[SourceSpec, ...] = ()
    max_frames: int | None = 50  # per sequence, for speed (None: all)
    max_size: int | None = 480  # working resolution bound of the propagation


@dataclass(frozen=True)
class FinetuneSection:
    images: str | None = None
    labels: str | None = None
    base: str | None = None
    out: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    stage: str
    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    resume: bool = True  # continue from output_dir/checkpoints/last.pt when it exists
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.optim.amp_dtype not in ("bf16", "fp16"):
            raise ValueError(f"optim.amp_dtype must be bf16 or fp16, got {self.optim.amp_dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML and checkpoint metadata."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML value to the type ``hint`` (dataclasses, tuples, optionals, scalars)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(errors[0] if errors else f"{where}: cannot convert {value!r}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {'an integer' if hint is int else 'a number'}, got {value!r}") from None
        if hint is int and isinstance(value, float) and value != number:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return _expand_variables(str(value), where)
    raise TypeError(f"{where}: unsupported config type {hint!r}")


_VARIABLE = re.compile(r"\$\{(\w+)\}")


def _expand_variables(text: str, where: str) -> str:
    """``${NAME}`` -> the environment variable NAME (the recipes' data paths, e.g. ``${DAVIS_ROOT}``)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"{where} uses ${{{name}}}: set the environment variable {name} "
                             f"(e.g. {name}=/path/to/data) or override {where}")
        return os.environ[name]

    return _VARIABLE.sub(value, text)


def _build(cls: type, values: Any, where: str) -> Any:
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown config key {where + '.' if where else ''}{unknown[0]}: allowed keys are {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """["optim.lr=1e-4", "data.crop_size=[128, 128]"] -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. optim.lr=1e-4)")
        _set_dotted(tree, key.strip(), yaml.safe_load(text) if text.strip() else None)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_dict(values: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A TrainConfig from a nested dict and ``key=value`` overrides."""
    return _build(TrainConfig, _merge(values, parse_overrides(overrides)), "")


def bundled_configs() -> dict[str, Traversable]:
    """The YAML files shipped in the package (``training/configs``), by name: {"pretrain": file, ...},
    found through :mod:`importlib.resources` so an installed wheel finds them too."""
    folder = resources.files(__package__).joinpath(CONFIG_DIR.name)
    if not folder.is_dir():
        return {}
    return {item.name[: -len(CONFIG_SUFFIX)]: item for item in sorted(folder.iterdir(), key=lambda i: i.name)
            if item.name.endswith(CONFIG_SUFFIX) and item.is_file()}


def find_config(name_or_path: str | Path) -> Path | Traversable:
    """The config file ``name_or_path`` names: an existing YAML file, else a bundled config by
    name ("pretrain" or "pretrain.yaml"). FileNotFoundError lists the bundled names."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_configs()
    name = path.name[: -len(CONFIG_SUFFIX)] if path.name.endswith(CONFIG_SUFFIX) else path.name
    if len(path.parts) == 1 and name in bundled:
        return bundled[name]
    names = ", ".join(bundled) or "none in this installation"
    if len(path.parts) == 1 and not path.suffix:
        raise FileNotFoundError(f"no bundled config is named {path}: choose one of {names}, or give the path of a "
                                "YAML file")
    raise FileNotFoundError(f"config file {path} does not exist: give the path of a YAML file, or the name of a "
                            f"bundled config ({names})")


def load_config(path: str | Path | Traversable, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a stage's YAML file (a path, or a bundled config's name: :func:`find_config`) and
    apply ``key=value`` overrides."""
    found = find_config(path) if isinstance(path, (str, os.PathLike)) else path
    values = yaml.safe_load(found.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{found} must hold a mapping of config sections")
    return config_from_dict(values, overrides)


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
