"""One trainer for every stage: Adam, AMP on CUDA, torchrun DDP, atomic checkpoints with exact
resume, periodic validation J&F, a CSV log, tqdm progress and a PNG plot at the end.

Files written under ``config.output_dir``:
  checkpoints/last.pt   training state (model, optimiser, scaler, RNG states, iteration, history),
                        rewritten atomically every ``schedule.checkpoint_every`` iterations
  model.pt              the trained network in napari-rgmp's checkpoint format, with metadata
  best.pt               the network at the validation with the highest overall J&F so far (same
                        format; its metadata names the iteration and the scores): the one to ship
  train_log.csv         iteration, loss, learning rate, seconds, samples/s
  validation.csv        iteration, sequence, J, F, J&F (overall rows: sequence "overall")
  training.png          loss and validation J&F curves
  config.yaml           the resolved configuration
"""

from __future__ import annotations

import contextlib
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from rgmp_model.nn.checkpoint import (
    atomic_save, load_checkpoint, read_checkpoint_info, save_checkpoint, state_dict_sha256,
)
from rgmp_model.nn.network import RGMP, build_rgmp
from rgmp_model.steps import step

from .config import TrainConfig, save_config
from .distributed import ResumableDistributedSampler, Runtime, init_runtime, shutdown_runtime
from .norm import frozen_copy, has_trainable_batchnorm, thaw_batchnorm
from .plot import plot_training
from .train_state import read_train_state, rng_state, set_rng_state, unusable_state, writing_checkpoint
from .validation import validate

ObjectiveFactory = Callable[[RGMP], nn.Module]
_CURVE_POINTS = 500  # loss-curve points kept in the exported checkpoint's metadata


@dataclass
class TrainingHistory:
    iteration: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)  # (iteration, overall J&F)


def build_model(config: TrainConfig) -> RGMP:
    """The network a run starts from: ``model.init_checkpoint`` or a new one."""
    if config.model.init_checkpoint:
        return load_checkpoint(config.model.init_checkpoint)[0]
    return build_rgmp(config.model.backbone, config.model.decoder_channels, config.model.imagenet_weights)


def _on_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch tensor on ``device`` (asynchronously from pinned memory); images (B, 3, H, W) in
    channels-last, the network's memory format, so its first convolution does not convert them."""
    tensor = tensor.to(device, non_blocking=True)
    if device.type == "cuda" and tensor.dim() == 4 and tensor.shape[1] == 3 and tensor.is_floating_point():
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def _append_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Append rows to a CSV file, writing the header first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as stream:
        writer = csv.writer(stream)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


class TrainingOutOfMemoryError(ValueError):
    """CUDA ran out of memory even with the batch split: the message says what to lower."""


class NonFiniteTrainingError(ValueError):
    """The loss, a gradient or a weight became NaN or infinite: the run stops, its last good
    checkpoint is kept."""


def _remove_orphan_temporaries(output_dir: Path) -> None:
    """Delete the temporary files of atomic saves that a killed run left behind."""
    for folder in (output_dir, output_dir / "checkpoints"):
        if folder.is_dir():
            for orphan in folder.glob(".*.tmp"):
                orphan.unlink(missing_ok=True)


def _drop_rows_after(path: Path, iteration: int) -> None:
    """Remove the rows of a CSV log whose iteration is past ``iteration`` (logged after the last
    checkpoint by a run that was then stopped: the resumed run logs them again)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= iteration]
    if len(kept) != len(lines):
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text("".join(kept))
        temporary.replace(path)


class Trainer:
    """Runs ``config.optim.iterations`` steps of ``objective_factory(model)(batch) -> loss`` over
    ``dataset`` (a map-style dataset whose item k depends only on k).

    on_progress(iteration, total, loss) is called after every step; should_stop() is checked
    before every step and ends the run early (the state is saved, so it can be resumed).
    """

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        objective_factory: ObjectiveFactory,
        *,
        validation_sequences: Sequence[Any] = (),
        model: RGMP | None = None,
        metadata: dict[str, Any] | None = None,
        on_progress: Callable[[int, int, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.objective_factory = objective_factory
        self.validation_sequences = list(validation_sequences)
        self.model = model
        self.metadata = dict(metadata or {})
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.show_progress = show_progress
        self.history = TrainingHistory()
        self.output_dir = Path(config.output_dir)
        self.state_path = self.output_dir / "checkpoints" / "last.pt"
        self._saved_iteration: int | None = None  # iteration held by state_path
        self._micro_batches = 1  # raised (x2) after a CUDA out-of-memory error

    # --------------------------------------------------------------------------------- setup
    def _amp(self, device: torch.device) -> tuple[contextlib.AbstractContextManager, torch.amp.GradScaler]:
        optim = self.config.optim
        enabled = optim.amp and device.type == "cuda"
        dtype = torch.bfloat16 if optim.amp_dtype == "bf16" else torch.float16
        autocast = torch.autocast("cuda", dtype=dtype) if enabled else contextlib.nullcontext()
        return autocast, torch.amp.GradScaler(device.type, enabled=enabled and dtype == torch.float16)

    def _resume(self, model: RGMP, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        state = read_train_state(self.state_path)  # training/train_state.py: a message for a damaged file
        try:
            model.load_state_dict(state["model"], strict=True)
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            history = TrainingHistory(
                state["iteration"], [tuple(x) for x in state["losses"]], [tuple(x) for x in state["validation"]]
            )
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
            raise unusable_state(self.state_path, f"it does not fit this run's model and optimiser ({error})") from error
        self.history = history
        self._saved_iteration = state["iteration"]

    def _save_state(self, model: RGMP, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        kept = (f"the previous {self.state_path.name} (iteration {self._saved_iteration}) is kept" if
                self._saved_iteration is not None and self.state_path.is_file() else "no training state was saved")
        payload = {
            "iteration": self.history.iteration,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "losses": self.history.losses,
            "validation": self.history.validation,
            "config": self.config.to_dict(),
        }
        with writing_checkpoint(self.state_path, self.history.iteration, kept):
            atomic_save(payload, self.state_path)

    # --------------------------------------------------------------------------------- run
    def fit(self) -> Path:
        """Train (or resume and continue); returns the path of the exported ``model.pt``."""
        config = self.config
        runtime = init_runtime(config.device)
        try:
            return self._fit(runtime)
        finally:
            shutdown_runtime(runtime)

    def _fit(self, runtime: Runtime) -> Path:
        config, device = self.config, runtime.device
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        model = self.model if self.model is not None else build_model(config)
        if config.model.train_batchnorm:
            thaw_batchnorm(model)
        model = model.to(device, memory_format=torch.channels_last).train()
        objective = self.objective_factory(model)
        step_module: nn.Module = objective
        if runtime.distributed:
            step_module = DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.optim.aux_weight == 0,
            )
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        autocast, scaler = self._amp(device)
        if config.resume and self.state_path.is_file():
            step(f"resuming from {self.state_path}")
            self._resume(model, optimizer, scaler)
        if runtime.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.output_dir / "config.yaml")
            _remove_orphan_temporaries(self.output_dir)
            for name in ("train_log.csv", "validation.csv"):  # rows past the checkpoint are redone
                _drop_rows_after(self.output_dir / name, self.history.iteration)

        batch_size = config.data.batch_size
        sampler = ResumableDistributedSampler(
            self.dataset, runtime.world_size, runtime.rank, seed=config.seed, start=self.history.iteration * batch_size
        )
        workers = config.data.num_workers
        loader = DataLoader(self.dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                            prefetch_factor=4 if workers > 0 else None)
        batches = iter(loader)
        total = config.optim.iterations
        bar = tqdm(total=total, initial=self.history.iteration, unit="it", desc=config.stage,
                   disable=not (runtime.is_main and self.show_progress))
        started, first_iteration = time.perf_counter(), self.history.iteration
        while self.history.iteration < total:
            if self.should_stop is not None and self.should_stop():
                break
            step(f"training {config.stage}, iteration {self.history.iteration + 1} of {total} in {self.output_dir}")
            batch = {k: _on_device(v, device) for k, v in next(batches).items()}
            for group in optimizer.param_groups:  # the schedule, also right after a resume
                group["lr"] = config.optim.learning_rate(self.history.iteration)
            optimizer.zero_grad(set_to_none=True)
            try:
                loss = self._forward_backward(step_module, batch, autocast, scaler)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if runtime.distributed or self._micro_batches >= batch_size:
                    raise TrainingOutOfMemoryError(
                        f"out of GPU memory at iteration {self.history.iteration + 1} with batches of "
                        f"{batch_size // self._micro_batches}: set a smaller data.crop_size or data.batch_size "
                        f"and start the same command again (the run resumes from {self.state_path})") from None
                self._micro_batches *= 2
                print(f"out of GPU memory at iteration {self.history.iteration + 1}: the batch now goes through "
                      f"in {self._micro_batches} parts (nearly the same updates, slower)", flush=True)
                loss = self._forward_backward(step_module, batch, autocast, scaler)
            scaler.unscale_(optimizer)
            # The gradient norm is the same on every rank (gradients are all-reduced): one decision.
            norm = torch.nn.utils.clip_grad_norm_(parameters, config.optim.grad_clip or float("inf"))
            # fp16's scaler skips steps whose gradients overflow (its normal start): only the loss decides
            if not (torch.isfinite(loss.detach()) and (scaler.is_enabled() or torch.isfinite(norm))):
                raise NonFiniteTrainingError(self._non_finite_message(
                    self.history.iteration + 1, "the loss or a gradient is not finite", loss))
            scaler.step(optimizer)
            scaler.update()
            value = self._mean_over_ranks(loss.detach(), runtime)
            self.history.iteration += 1
            iteration = self.history.iteration
            self.history.losses.append((iteration, value))
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if runtime.is_main and (iteration % config.schedule.log_every == 0 or iteration == total):
                elapsed = time.perf_counter() - started
                rate = (iteration - first_iteration) * batch_size * runtime.world_size / max(elapsed, 1e-9)
                self._log(iteration, value, elapsed, rate)
            if self.on_progress is not None:
                self.on_progress(iteration, total, value)
            if iteration % config.schedule.checkpoint_every == 0:
                self._check_weights(model, iteration)
                self._checkpoint(runtime, model, optimizer, scaler)
            if self.validation_sequences and iteration % config.schedule.validate_every == 0:
                self._validate(runtime, model)
        bar.close()
        self._check_weights(model, self.history.iteration)
        self._checkpoint(runtime, model, optimizer, scaler)
        return self._finish(runtime, model)

    def _forward_backward(self, step_module: nn.Module, batch: dict[str, torch.Tensor],
                          autocast: contextlib.AbstractContextManager, scaler: torch.amp.GradScaler) -> torch.Tensor:
        """Loss of ``batch`` and its gradients, the batch split into ``self._micro_batches`` parts
        whose losses are weighted by their share (the objectives average over samples)."""
        size = next(iter(batch.values())).shape[0]
        bounds = np.linspace(0, size, self._micro_batches + 1).round().astype(int)
        total = torch.zeros((), device=next(iter(batch.values())).device)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            with autocast:
                part = step_module({k: v[start:stop] for k, v in batch.items()}) * ((stop - start) / size)
            scaler.scale(part).backward()
            total = total + part.detach().float()
        return total

    def _non_finite_message(self, iteration: int, problem: str, loss: torch.Tensor | None = None) -> str:
        kept = (f"{self.state_path} (iteration {self._saved_iteration}) is kept untouched"
                if self._saved_iteration is not None else "no checkpoint was written")
        value = f" (loss {float(loss.detach()):.4g})" if loss is not None else ""
        return (f"training stopped at iteration {iteration}: {problem}{value}. "
                f"{kept}. Lower optim.lr (now {self.config.optim.lr:g}) or set optim.grad_clip, then start "
                "the same command again to resume from the last good checkpoint")

    def _check_weights(self, model: RGMP, iteration: int) -> None:
        """Refuse to save (or export) weights that are NaN or infinite."""
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise NonFiniteTrainingError(self._non_finite_message(iteration, "some weights are NaN or infinite"))

    @staticmethod
    def _mean_over_ranks(loss: torch.Tensor, runtime: Runtime) -> float:
        if runtime.distributed:
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss /= runtime.world_size
        return float(loss)

    def _checkpoint(self, runtime: Runtime, model: RGMP, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler) -> None:
        if runtime.is_main:
            self._save_state(model, optimizer, scaler)
        self._saved_iteration = self.history.iteration
        runtime.barrier()

    def _log(self, iteration: int, loss: float, elapsed: float, samples_per_second: float) -> None:
        """One row of train_log.csv (seconds and rate since this process started training)."""
        _append_csv(self.output_dir / "train_log.csv", ["iteration", "loss", "lr", "seconds", "samples_per_second"],
                    [[iteration, f"{loss:.6f}", self.config.optim.learning_rate(iteration - 1), f"{elapsed:.2f}", f"{samples_per_second:.2f}"]])

    def _validate(self, runtime: Runtime, model: RGMP) -> None:
        step(f"validating at iteration {self.history.iteration}")
        if runtime.is_main:
            result = validate(model, self.validation_sequences, runtime.device,
                              self.config.validation.max_frames, self.config.validation.max_size)
            model.train()
            iteration = self.history.iteration
            best_so_far = max((jf for _, jf in self.history.validation), default=-1.0)
            self.history.validation.append((iteration, result.selection_jf))
            rows = [(scores.name, scores.j_mean, scores.f_mean, scores.jf_mean) for scores in result.sequences]
            if len(result.groups) > 1:  # each set's J&F; "overall" is then their mean (the selection score)
                rows.extend((f"group:{name}", float("nan"), float("nan"), jf) for name, jf in result.groups.items())
                rows.append(("overall", float("nan"), float("nan"), result.selection_jf))
            else:
                rows.append(("overall", result.overall.j_mean, result.overall.f_mean, result.overall.jf_mean))
            _append_csv(self.output_dir / "validation.csv", ["iteration", "sequence", "j", "f", "jf"],
                        [[iteration, name, f"{j:.4f}", f"{f:.4f}", f"{jf:.4f}"] for name, j, f, jf in rows])
            if result.selection_jf > best_so_far:
                scores = {name: round(jf, 4) for name, _, _, jf in rows}
                self._export(model, self.output_dir / "best.pt", {"best_validation": {"iteration": iteration,
                                                                                     "jf": scores}})
        runtime.barrier()

    def _earlier_stages(self) -> list[dict[str, Any]]:
        """The training stages behind ``model.init_checkpoint`` (from its metadata), oldest first."""
        if not self.config.model.init_checkpoint:
            return []
        meta = read_checkpoint_info(self.config.model.init_checkpoint).metadata
        if meta.get("stages"):
            return [dict(stage) for stage in meta["stages"]]
        return [{"recipe": meta.get("recipe", "unknown"), "iterations": meta.get("iterations")}]

    def _export(self, model: RGMP, path: Path, extra: dict[str, Any] | None = None) -> None:
        """``model`` (BatchNorm frozen again) in the checkpoint format, with the run's metadata."""
        step = max(1, len(self.history.losses) // _CURVE_POINTS)
        metadata = {
            "recipe": self.config.stage,
            "config": self.config.to_dict(),
            "data": [source["kind"] + (f":{source['path']}" if source.get("path") else "")
                     for source in self.config.to_dict()["data"]["sources"]],
            "iterations": self.history.iteration,
            "loss_curve": [list(x) for x in self.history.losses[::step]],
            "validation_jf": [list(x) for x in self.history.validation],
            "base_checkpoint": self.config.model.init_checkpoint,
            "stages": [*self._earlier_stages(), {"recipe": self.config.stage, "iterations": self.history.iteration}],
            **self.metadata,
            **(extra or {}),
        }
        kept = f"{'the previous file is kept; ' if path.is_file() else ''}{self.state_path.name} holds the training state"
        with writing_checkpoint(path, self.history.iteration, kept):
            save_checkpoint(path, frozen_copy(model) if has_trainable_batchnorm(model) else model, metadata)

    def _finish(self, runtime: Runtime, model: RGMP) -> Path:
        path = self.output_dir / "model.pt"
        if runtime.distributed:  # every rank records its weights: they must be identical
            digest = state_dict_sha256(model.state_dict())
            (self.output_dir / f"weights_rank{runtime.rank}.sha256").write_text(digest + "\n")
        if runtime.is_main:
            self._export(model, path)
            plot_training(self.output_dir / "training.png", self.history.losses, self.history.validation)
        runtime.barrier()
        return path
