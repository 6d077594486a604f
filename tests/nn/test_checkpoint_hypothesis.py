"""Checkpoint contents at random (hypothesis): state_dicts with values of the wrong type, shape or
dtype, missing or extra keys, configs and metadata of the wrong types, each file read by the three
readers a user meets: ``load_checkpoint`` (propagation, fine-tuning), ``rgmp models`` (the listing)
and the docks' model picker (``describe_checkpoint``, the Fine-tune base and the Propagate model).
Only clear errors come out: a ValueError or FileNotFoundError naming the file, never another
exception, never an internal name. Tiny model, few examples: well under a minute."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers.bad_input_checks import INTERNAL_WORDS, run_main
from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.nn.checkpoint import state_dict_sha256

_names = itertools.count()
_BASE: dict[str, Any] = {}


def base_payload(folder: Path) -> dict[str, Any]:
    """The payload of a tiny checkpoint, read once."""
    if not _BASE:
        torch.manual_seed(0)
        path = save_checkpoint(folder / "base.pt", build_rgmp("resnet18", 8), {"recipe": "random", "working_size": 64})
        _BASE.update(torch.load(path, weights_only=True))
    return _BASE


ODD_VALUES = st.sampled_from([3, 2.5, "weights", None, [1, 2], {"a": torch.zeros(1)}, True])
ODD_TENSORS = st.sampled_from([
    torch.zeros(()), torch.zeros(0), torch.zeros(3, 3), torch.zeros(1, 1, 1, 1, 1), torch.zeros(2, dtype=torch.int64),
    "same-shape-int", "same-shape-bool", "same-shape-complex", "same-shape-half", "same-shape-nan",
])
STATE_CHANGES = st.lists(st.tuples(st.sampled_from(["value", "tensor", "drop", "extra", "int-key"]),
                                   st.integers(0, 10_000), st.one_of(ODD_VALUES, ODD_TENSORS)), max_size=3)
CONFIGS = st.one_of(
    st.fixed_dictionaries({"backbone": st.one_of(st.sampled_from(["resnet18", "resnet50", "vgg", ""]),
                                                 st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
                           "decoder_channels": st.one_of(st.sampled_from([8, 8.0, "8", -1, 0, True, 2**40]),
                                                         st.none(), st.lists(st.integers(), max_size=2))}),
    st.sampled_from([[], 7, "resnet18", None, {"backbone": "resnet18"}, {"backbone": "resnet18", "decoder_channels": 8,
                                                                          "extra": 1}, {3: "resnet18"}]),
)
METADATA = st.one_of(
    st.none(), st.sampled_from([[1, 2], 5, "text"]),
    st.dictionaries(st.sampled_from(["working_size", "validation", "best_validation", "frames_used", "base_checkpoint",
                                     "data", "trained_on", "recipe", "iterations", "date"]),
                    st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2),
                              st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.text(max_size=3)),
                                              max_size=2), st.floats(allow_nan=True)), max_size=4),
)


def _odd_tensor(spec: Any, like: torch.Tensor) -> Any:
    kinds = {"same-shape-int": lambda: torch.zeros(like.shape, dtype=torch.int32),
             "same-shape-bool": lambda: torch.zeros(like.shape, dtype=torch.bool),
             "same-shape-complex": lambda: torch.zeros(like.shape, dtype=torch.complex64),
             "same-shape-half": lambda: like.half(),
             "same-shape-nan": lambda: torch.full(like.shape, float("nan"))}
    return kinds[spec]() if isinstance(spec, str) and spec in kinds else spec


def build_payload(folder: Path, changes: list, config: Any, metadata: Any, layout: str, keep_hash: bool) -> Any:
    base = base_payload(folder)
    state = dict(base["state_dict"])
    keys = sorted(state)
    for kind, index, value in changes:
        key = keys[index % len(keys)]
        if kind == "value":
            state[key] = value if not isinstance(value, torch.Tensor) else 3
        elif kind == "tensor":
            state[key] = _odd_tensor(value, base["state_dict"][key])
        elif kind == "drop":
            state.pop(key, None)
        elif kind == "extra":
            state[f"decoder.extra{index}.weight"] = torch.zeros(2)
        else:
            state[index] = torch.zeros(2)
    if layout == "bare":
        return state
    payload = dict(base, state_dict=state, config=config, metadata=metadata)
    if not keep_hash:
        try:
            payload["sha256"] = state_dict_sha256(state)  # past the hash check, to the deeper ones
        except Exception:
            pass
    return payload


def assert_clear(message: str, path: Path) -> None:
    assert path.name in message, message
    for word in INTERNAL_WORDS:
        assert word not in message, f"internal text {word!r} in {message!r}"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(changes=STATE_CHANGES, config=CONFIGS, metadata=METADATA, layout=st.sampled_from(["project", "project", "bare"]),
       keep_hash=st.booleans())
@example(changes=[("value", 5, 3)], config={"backbone": "resnet18", "decoder_channels": 8}, metadata={},
         layout="project", keep_hash=False)  # an int instead of a tensor (issue 24)
@example(changes=[("tensor", 9, "same-shape-complex")], config={"backbone": "resnet18", "decoder_channels": 8},
         metadata={"working_size": "64", "frames_used": 3, "validation": [1]}, layout="project", keep_hash=False)
@example(changes=[("drop", 1, None), ("extra", 2, None)], config={"backbone": [1], "decoder_channels": "8"},
         metadata=[1, 2], layout="project", keep_hash=False)
@example(changes=[("int-key", 3, None)], config=None, metadata=None, layout="bare", keep_hash=False)
def test_any_checkpoint_content_gives_a_clear_error_or_a_model(tmp_path_factory, monkeypatch, changes, config,
                                                               metadata, layout, keep_hash) -> None:
    from napari_rgmp.checkpoints import describe_checkpoint
    from rgmp_model.cli import main

    from rgmp_model.nn import models

    folder = tmp_path_factory.mktemp("hypothesis", numbered=True)
    monkeypatch.setenv("RGMP_MODELS_DIR", str(folder))
    monkeypatch.setattr(models, "bundled_checkpoint", lambda: None)  # the listing reads only this file
    path = folder / f"case{next(_names)}.pt"
    torch.save(build_payload(tmp_path_factory.getbasetemp(), changes, config, metadata, layout, keep_hash), path)

    try:
        load_checkpoint(path)
        loaded = True
    except (ValueError, FileNotFoundError) as error:  # the only errors the loader may raise
        assert_clear(str(error), path)
        loaded = False

    code, out, err = run_main(main, ["models"])  # the user folder holds this one file
    assert code == (0 if loaded else 1), (code, out, err)
    assert "Traceback" not in out + err
    entry = out[out.index(f"[user] {path}"):]
    if not loaded:
        assert "DAMAGED" in entry
        assert_clear(entry.split("DAMAGED: ", 1)[1].split("\n[", 1)[0], path)

    description = describe_checkpoint(path)  # never raises
    assert description.ok == loaded
    line, details = description.line, description.details  # what the picker shows
    assert isinstance(line, str) and isinstance(details, str)
    if not description.ok:
        assert_clear(description.text, path)
