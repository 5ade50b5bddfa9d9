"""The training loop: data → forward → loss → step → log → checkpoint (→ eval, trace), in one screen.

    result = train(TrainConfig())        # what ``python -m paa_toolkit.train`` runs

* The pieces have their own modules: the optimiser and lr schedule (:mod:`.solver`), the data order
  and RNGs that make a resume exact (:mod:`.sampling`), what a checkpoint holds (:mod:`.checkpoint`),
  the run folder's files (:mod:`.run_files`), COCO evaluation (:mod:`.metrics`).
* Several processes (``torchrun --nproc_per_node N -m paa_toolkit.train``): the process group comes
  from torchrun's environment (NCCL on GPUs, Gloo on CPU), the model is wrapped in
  ``DistributedDataParallel``, each process takes its slice of every global batch
  (``data.batch_size`` images per process, the lr scaled to the global batch), the positive count
  is averaged over processes before normalising the losses (:mod:`paa_toolkit.model.losses`), rank 0
  alone writes files, and evaluation is sharded and gathered on rank 0.
* Output folder ``runs/<name>/``: ``config.yaml``, ``metrics.jsonl`` (one JSON record per log /
  eval / trace), ``last.pth`` + ``previous.pth``, ``trace/iter_000123.pt`` (assignment snapshots
  for Fig. 4a / 7), ``provenance.json`` (the body's digest, code, threads: :mod:`.provenance`) and, written
  last, ``final_metrics.json``. The folder is locked while training;
  a run already in it is continued only with ``resume``, replaced only with ``overwrite``
  (:mod:`.run_folder`). Ctrl-C / SIGTERM end the iteration, write a checkpoint and stop (:mod:`.signals`).

Works with any torchvision-style detector; a :class:`~paa_toolkit.model.detector.PAADetector`'s
assignment statistics (positives per GT, Fig. 4b) are logged through its assignment hook, and a
model's ``inspect_assignment`` (the trace) is used when it has one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed
from ..data.build import build_datasets
from ..data.coco import CocoDetection, collate
from ..distributed import is_writer, resolve_device, unwrap
from ..model.detector import PAADetector
from .checkpoint import (
    FINAL_METRICS,
    LAST,
    ModelBuilder,
    default_model_builder,
    find_resume_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from .config import TrainConfig, validate
from .metrics import evaluate_coco
from .precision import apply_speed_levers
from .pretrain import with_pretrained_weights
from .provenance import record_provenance, training_provenance
from .run_files import CONFIG_FILE, METRICS_FILE, MetricsLog, atomic_write_text, trace_image_indices, write_trace
from .run_folder import claimed_run_folder
from .sampling import DeterministicBatchSampler, SeededSamples, rng_untouched, seed_everything
from .signals import StopOnSignal, TrainingInterrupted
from .solver import WarmupStepSchedule, build_optimizer

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights) became NaN/inf; training stopped, the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


def train(cfg: TrainConfig, *, build_model: ModelBuilder | None = None, progress: bool = True) -> TrainResult:
    """Train ``cfg`` end to end (resuming if asked), evaluate on the val split, write the run folder.

    Started by torchrun (``WORLD_SIZE`` > 1), it joins the process group first and leaves it at the
    end; with a process group already initialised by the caller, it trains in that group.
    """
    validate(cfg)
    device = resolve_device(cfg.device)
    with (
        distributed.process_group_from_env(device),
        StopOnSignal(device) as stop,
        claimed_run_folder(cfg.run_dir, resume=cfg.resume is not None, overwrite=cfg.overwrite),
    ):
        run = _set_up(cfg, device, build_model or default_model_builder)
        run.progress = progress and is_writer()
        window = LogWindow()
        if isinstance(unwrap(run.model), PAADetector):  # the assignment of this process's (rank 0's) batches
            unwrap(run.model).register_assignment_hook(window.add, diagnostics=True)
        solver = cfg.solver
        run.model.train()
        bar = tqdm(
            total=solver.max_iters, initial=run.start, desc="train", dynamic_ncols=True, disable=not run.progress
        )
        stop.arm()  # from here, Ctrl-C / SIGTERM end the iteration, save it and stop
        for iteration, (images, targets) in zip(range(run.start, solver.max_iters), run.loader):
            run.trace(iteration)
            lr = run.optimizer.param_groups[0]["lr"]
            window.add(run.step(images, targets, iteration))
            bar.update(1)
            done = iteration + 1
            if done % cfg.log_every == 0 or done == solver.max_iters:
                stats = window.close(run.images_per_step)
                run.record({"kind": "train", "iteration": done, "lr": lr, **stats})
                bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items() if k.startswith("loss") or k == "imgs_per_s"})
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == solver.max_iters:
                run.save_checkpoint(done)
            if cfg.eval_every and done % cfg.eval_every == 0 and done != solver.max_iters:
                run.evaluate(done)
            if stop.requested():
                bar.close()
                run.interrupt(done, stop.signum)
        stop.disarm()
        bar.close()
        return run.finish()


class LogWindow:
    """The values of the iterations since the last ``train`` record, averaged into the next one.

    Tensors are kept as they are (no device sync) until :meth:`close`. NaN values (a figure over an
    empty set, e.g. GTs without a positive among the large GTs of a batch without large GTs) are left
    out of the mean; a key that was NaN all window long is left out of the record.
    """

    def __init__(self):
        self.values: dict[str, list[float | Tensor]] = defaultdict(list)
        self.tick = time.perf_counter()

    def add(self, values: Mapping[str, float | Tensor]) -> None:
        for key, value in values.items():
            self.values[key].append(value)

    def close(self, images_per_step: int) -> dict[str, float]:
        """The mean of every value and the images per second since the window opened; opens the next."""
        elapsed = time.perf_counter() - self.tick
        stats = {}
        for key, values in self.values.items():
            finite = [x for x in map(float, values) if not math.isnan(x)]
            if finite:
                stats[key] = sum(finite) / len(finite)
        stats["imgs_per_s"] = len(self.values["loss"]) * images_per_step / max(elapsed, 1e-9)
        self.values.clear()
        self.tick = time.perf_counter()
        return stats


@dataclass
class TrainingRun:
    """The objects of one training run (built by :func:`_set_up`) and what it does each iteration."""

    cfg: TrainConfig
    device: torch.device
    model: nn.Module  # wrapped in DistributedDataParallel when there is a process group
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_ds: CocoDetection
    val_ds: CocoDetection
    sampler: DeterministicBatchSampler
    loader: DataLoader
    start: int  # the first iteration to run (the checkpoint's, when resuming)
    last_good: Path | None  # the newest checkpoint written (or resumed from)
    metrics: MetricsLog | None  # rank 0 only
    trace_ds: CocoDetection  # the training set without flips
    trace_indices: list[int]
    trace_iters: set[int]
    saved: int | None = None  # the iteration of the newest checkpoint written
    progress: bool = False  # progress bars (rank 0): training, and each evaluation

    @property
    def use_amp(self) -> bool:
        return self.cfg.solver.amp and self.device.type == "cuda"

    @property
    def images_per_step(self) -> int:
        return self.cfg.data.batch_size * distributed.world_size()

    def record(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def step(self, images: list[Tensor], targets: list[dict], iteration: int) -> dict[str, Tensor]:
        """Forward, backward, optimiser and lr step; the loss and its terms averaged over processes."""
        images, targets = _to_device(images, targets, self.device)
        with torch.autocast(self.device.type, enabled=self.use_amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        # total and terms averaged over processes (= the loss of the global batch), in one all-reduce;
        # a non-finite value anywhere makes every process stop at the same iteration
        mean_loss, *mean_terms = distributed.mean_over_processes(
            torch.stack([loss.detach(), *(v.detach() for v in losses.values())])
        ).unbind()
        if not torch.isfinite(mean_loss):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            where = (
                f" (this process, rank {distributed.rank()}: {terms})"
                if distributed.world_size() > 1
                else f" ({terms})"
            )
            raise NonFiniteLossError(
                f"non-finite loss at iteration {iteration}{where}; training stopped. Last good checkpoint: "
                f"{self.last_good or 'none yet'}. Try a lower --lr or --solver.clip_grad_norm 10"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.solver.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {
            "loss": mean_loss,
            **{k if k.startswith("loss") else f"loss_{k}": v for k, v in zip(losses, mean_terms)},
        }

    def save_checkpoint(self, done: int) -> None:
        """``last.pth`` after ``done`` iterations (rank 0 writes it); never with non-finite weights."""
        if not bool(torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()):
            raise NonFiniteLossError(
                f"weights became non-finite at iteration {done - 1}; training stopped "
                f"without saving. Last good checkpoint: {self.last_good or 'none yet'}"
            )
        if is_writer():
            self.metrics.sync()  # the records up to `done` reach the disk before its checkpoint does
            state = training_state(
                self.model, self.optimizer, self.scheduler, self.scaler, done, self.cfg, self.sampler, self.train_ds
            )
            self.last_good = save_checkpoint(state, self.cfg.run_dir)
        else:
            self.last_good = self.cfg.run_dir / LAST
        self.saved = done

    def interrupt(self, done: int, signum: int | None) -> None:
        """Ctrl-C / SIGTERM: a checkpoint after ``done`` iterations (unless just written), then stop."""
        if self.saved != done:
            self.save_checkpoint(done)
        raise TrainingInterrupted(signum, done, self.last_good)

    def trace(self, iteration: int) -> None:
        """At the trace iterations, rank 0 saves the assignment of the trace images (0 = before any step)."""
        if is_writer() and iteration in self.trace_iters:
            with rng_untouched(self.device):
                record = write_trace(
                    self.model, self.trace_ds, self.trace_indices, iteration, self.cfg.run_dir, self.device
                )
            if record:
                self.record(record)

    def evaluate(self, iteration: int) -> dict[str, float]:
        """COCO metrics on the val split; every process predicts its shard."""
        with rng_untouched(self.device):
            result = evaluate_coco(
                unwrap(self.model), self.val_ds, self.cfg.eval_batch_size, self.device, progress=self.progress
            )
        self.record({"kind": "eval", "iteration": iteration, **result})
        return result

    def finish(self) -> TrainResult:
        """The last trace and the final evaluation; ``final_metrics.json`` is written last."""
        final_iter = max(self.start, self.cfg.solver.max_iters)
        self.trace(final_iter)
        result = TrainResult(run_dir=self.cfg.run_dir, iteration=final_iter, checkpoint=self.last_good)
        result.metrics = self.evaluate(final_iter)
        if is_writer():
            atomic_write_text(
                self.cfg.run_dir / FINAL_METRICS, json.dumps({"iteration": final_iter, **result.metrics}, indent=1)
            )
        distributed.barrier()  # nobody leaves the process group while rank 0 still writes
        return result


# ---- setup ----------------------------------------------------------------------------------------
def _set_up(cfg: TrainConfig, device: torch.device, build_model: ModelBuilder) -> TrainingRun:
    """Seed, data, model, optimiser; resume from a checkpoint if asked; open the run folder."""
    seed_everything(cfg.seed)  # the same seed in every process: identical initial weights
    train_ds, val_ds = distributed.rank_zero_first(lambda: build_datasets(cfg.data))
    _check_boxes(train_ds)
    for dataset in (train_ds, val_ds):  # every rank: a bad image stops all of them before the first step
        dataset.check_images()
    model_cfg = distributed.rank_zero_first(lambda: with_pretrained_weights(cfg))  # model.backbone_pretrain
    model = build_model(model_cfg, train_ds.num_classes).to(device)
    solver, batch_size, world = cfg.solver, cfg.data.batch_size, distributed.world_size()
    optimizer = build_optimizer(model, solver, batch_size * world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupStepSchedule(solver))
    if solver.amp and device.type != "cuda":
        log.warning("solver.amp needs CUDA; training in float32 on %s", device)
    scaler = torch.amp.GradScaler(device.type, enabled=solver.amp and device.type == "cuda")

    start, resumed = 0, distributed.from_rank_zero(lambda: find_resume_checkpoint(cfg))  # rank 0 reads, all restore
    if resumed is not None:
        start = restore_training_state(*resumed, cfg, model, optimizer, scheduler, scaler)
    log.info(
        "training %s/%s on %d images (%d classes), batch %d%s, lr %.4g (solver.lr %g × batch %d / "
        "solver.reference_batch_size %d), iterations %d..%d on %s → %s",
        cfg.model.arch,
        cfg.assign.rule,
        len(train_ds),
        train_ds.num_classes,
        batch_size,
        f" x {world} processes" if world > 1 else "",
        solver.scaled_lr(batch_size * world),
        solver.lr,
        batch_size * world,
        solver.reference_batch_size,
        start,
        solver.max_iters,
        device,
        cfg.run_dir,
    )
    metrics = _open_run_folder(cfg, resume_from=start if resumed else None) if is_writer() else None
    model, precision = _wrap(model, cfg, device)
    if is_writer():  # what the weights started from and ran on, for paired comparisons (ablation.pairing)
        record_provenance(cfg.run_dir, training_provenance(model_cfg.model, device, precision, start))

    sampler = DeterministicBatchSampler(
        len(train_ds), batch_size, cfg.seed, start, solver.max_iters, distributed.rank(), world
    )
    # its own generator: creating the loader's iterator must not draw from the (restored) global RNG
    loader = DataLoader(
        SeededSamples(train_ds),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    trace_ds = copy.copy(train_ds)
    trace_ds.train = False  # the trace images are never flipped
    return TrainingRun(
        cfg,
        device,
        model,
        optimizer,
        scheduler,
        scaler,
        train_ds,
        val_ds,
        sampler,
        loader,
        start,
        last_good=resumed[0] if resumed else None,
        metrics=metrics,
        trace_ds=trace_ds,
        trace_indices=trace_image_indices(trace_ds, cfg.trace_images),
        trace_iters=set(cfg.trace_schedule()),
    )


def _check_boxes(train_ds: CocoDetection) -> None:
    """Refuse a training set without a box to learn from (no annotations, all ``iscrowd``, all skipped): every
    iteration would train on background alone, and the run would end with AP n/a."""
    counts = train_ds.annotation_counts()
    if counts["boxes"] == 0:
        skipped = f": {train_ds.skipped}" if train_ds.skipped else ""
        raise ValueError(
            f"{train_ds.ann_file}: no box to train on: {counts['images']} images, {counts['annotations']} annotations "
            f"({counts['crowd']} iscrowd, {counts['skipped']} skipped{skipped}), 0 usable boxes. Training needs "
            "annotations with iscrowd 0 and a box of positive size inside their image"
        )


def _open_run_folder(cfg: TrainConfig, resume_from: int | None) -> MetricsLog:
    """``config.yaml`` and the metrics log (kept up to ``resume_from`` when resuming)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return MetricsLog(cfg.run_dir / METRICS_FILE, resume_from=resume_from, final_iteration=cfg.solver.max_iters)


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, str]:
    """``solver.bf16`` / ``channels_last`` (:mod:`.precision`), ``solver.compile``: the backbone's forward
    compiled (state-dict keys unchanged); DDP in a process group. Returns the model and the backbone's dtype."""
    dtype = apply_speed_levers(model, cfg.solver.bf16, cfg.solver.channels_last, device)
    if dtype != "float32":
        log.info(
            "the backbone trains in %s (solver.bf16 %s); head, assignment, losses and evaluation in float32",
            dtype,
            cfg.solver.bf16,
        )
    if cfg.solver.compile:
        backbone = getattr(model, "backbone", None)
        if backbone is None:
            log.warning("solver.compile: the model has no .backbone; running uncompiled")
        else:
            backbone.forward = torch.compile(backbone.forward)
    if distributed.is_distributed():  # after restoring: DDP starts from rank 0's weights anyway
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, dtype


def _to_device(images: list[Tensor], targets: list[dict], device: torch.device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
    ]
    return images, targets


__all__ = ["LogWindow", "NonFiniteLossError", "TrainResult", "TrainingRun", "train"]
