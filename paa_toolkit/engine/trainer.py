"""The training loop, in one place: data → forward → loss → step → log → checkpoint (→ eval, trace).

    result = train(TrainConfig())        # what ``python -m paa_toolkit.train`` runs

* Optimiser: SGD, momentum 0.9, weight decay 1e-4 (none on norms and biases), linear warm-up then
  ÷10 steps at 90k/135k and 120k/135k of the run (Appendix A.1), lr scaled to the batch size.
* Exact resume: the data order and each sample's augmentation are pure functions of
  ``(seed, iteration)`` (:class:`DeterministicBatchSampler`), and checkpoints hold the model,
  optimiser, scheduler, GradScaler and every RNG — a run resumed at iteration k ends with the same
  weights as an uninterrupted one (CPU, fixed seed).
* Several processes (``torchrun --nproc_per_node N -m paa_toolkit.train``): the process group comes
  from torchrun's environment (NCCL on GPUs, Gloo on CPU), the model is wrapped in
  ``DistributedDataParallel``, each process takes its slice of every global batch
  (``data.batch_size`` images per process, the lr scaled to the global batch), the positive count
  is averaged over processes before normalising the losses (:mod:`paa_toolkit.model.losses`), rank 0
  alone writes files, and evaluation is sharded and gathered on rank 0. Checkpoints hold the bare
  model's state dict (no ``module.`` prefix): they load in a single process.
* Output folder ``runs/<name>/``: ``config.yaml``, ``metrics.jsonl`` (one JSON record per log /
  eval / trace), ``last.pth`` + ``previous.pth``, ``trace/iter_000123.pt`` (assignment snapshots
  for Fig. 4a / 7), ``final_metrics.json`` and the training plots (Fig. 4b).

Works with any torchvision-style detector; ``model.last_stats`` (positives per GT) and
``model.inspect_assignment`` (the trace) are used when the model has them.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import sys
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from .. import distributed
from ..data.coco import CocoDetection, collate
from .checkpoint import FINAL_METRICS, LAST, CheckpointError, atomic_save, find_resumable, resolve_checkpoint, save_checkpoint
from .config import DataConfig, ModelConfig, SolverConfig, TrainConfig, validate
from .evaluate import evaluate_coco

log = logging.getLogger(__name__)

ModelBuilder = Callable[[ModelConfig, int], nn.Module]


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights) became NaN/inf; training stopped, the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


# ---- the one place that knows about processes ---------------------------------------------------
def is_writer() -> bool:
    """Only rank 0 writes files, logs metrics and shows progress."""
    return distributed.is_main_process()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / compiled wrapper (for state dicts and optional methods)."""
    return getattr(model, "module", model)


# ---- setup ------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else CPU. Under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    if device.type == "cuda" and device.index is None and distributed.launched_by_torchrun():
        device = torch.device("cuda", distributed.local_rank())
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dataset_paths(data: DataConfig) -> tuple[Path, Path, Path, Path]:
    """``(train image dir, train annotations, val image dir, val annotations)`` of the configured dataset."""
    if data.dataset == "synthetic":
        from ..data.synthetic import make_synthetic_coco

        root = make_synthetic_coco(data.root, seed=data.synthetic_seed, num_train=data.synthetic_num_train,
                                   num_val=data.synthetic_num_val, image_size=data.synthetic_image_size)
        return root / "images", root / "train.json", root / "images", root / "val.json"
    root = Path(data.root) if data.root else None
    train_dir = Path(data.image_dir) if data.image_dir else root / "train2017"
    val_dir = Path(data.image_dir) if data.image_dir else root / "val2017"
    train_ann = Path(data.train_ann) if data.train_ann else root / "annotations" / "instances_train2017.json"
    val_ann = Path(data.val_ann) if data.val_ann else root / "annotations" / "instances_val2017.json"
    return train_dir, train_ann, val_dir, val_ann


def build_datasets(data: DataConfig) -> tuple[CocoDetection, CocoDetection]:
    """Training set (random flips) and validation set sharing its label mapping."""
    train_dir, train_ann, val_dir, val_ann = dataset_paths(data)
    train_ds = CocoDetection(train_dir, train_ann, train=True, flip_prob=data.flip_prob)
    val_ds = CocoDetection(val_dir, val_ann, train=False, category_ids=train_ds.category_ids)
    return train_ds, val_ds


def default_model_builder(cfg: ModelConfig, num_classes: int) -> nn.Module:
    from ..model.detector import build_model

    return build_model(cfg, num_classes)


def build_optimizer(model: nn.Module, solver: SolverConfig, batch_size: int) -> torch.optim.SGD:
    """SGD with the linearly scaled lr; no weight decay on 1-D parameters (norm scales, biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": solver.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=solver.scaled_lr(batch_size), momentum=solver.momentum)


class WarmupStepSchedule:
    """lr factor at an iteration: linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters``
    (Goyal et al. [9]), times ``gamma`` per milestone passed (Appendix A.1). Picklable for LambdaLR."""

    def __init__(self, solver: SolverConfig):
        self.warmup_iters, self.warmup_factor = solver.warmup_iters, solver.warmup_factor
        self.milestones, self.gamma = solver.milestones(), solver.gamma

    def __call__(self, iteration: int) -> float:
        warmup = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warmup = self.warmup_factor * (1 - alpha) + alpha
        return warmup * self.gamma ** sum(iteration >= m for m in self.milestones)


def lr_at(iteration: int, solver: SolverConfig, batch_size: int) -> float:
    """The learning rate used for the step of ``iteration`` (0-based)."""
    return solver.scaled_lr(batch_size) * WarmupStepSchedule(solver)(iteration)


# ---- deterministic data order ------------------------------------------------------------------
class DeterministicBatchSampler(Sampler):
    """Batches for iterations ``start..end-1`` as lists of ``(index, sample_seed)``.

    Samples form one stream, epoch after epoch, each epoch a permutation drawn from ``(seed,
    epoch)``; iteration ``i`` takes stream positions ``[i·B, (i+1)·B)`` (B = batch × world size,
    this rank's slice of it). So the batch of any iteration — and, through ``sample_seed``, its
    augmentation — is known without replaying the run: resuming mid-epoch is exact.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, end: int,
                 rank: int = 0, world_size: int = 1):
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.end, self.rank, self.world_size = start, end, rank, world_size
        self._perm: tuple[int, Tensor] | None = None

    def permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        first = (iteration * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.n)
            sample_seed = int(np.random.SeedSequence([self.seed, position, 1]).generate_state(1)[0])
            out.append((int(self.permutation(epoch)[offset]), sample_seed))
        return out

    def state(self, iteration: int) -> dict[str, int]:
        """Where the stream stands before ``iteration`` (saved in checkpoints, for reference)."""
        epoch, offset = divmod(iteration * self.world_size * self.batch_size, self.n)
        return {"seed": self.seed, "iteration": iteration, "epoch": epoch, "offset": offset}

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return (self.batch(i) for i in range(self.start, self.end))

    def __len__(self) -> int:
        return max(self.end - self.start, 0)


class SeededSamples(Dataset):
    """``dataset[index]`` with every RNG seeded from ``sample_seed`` (and the caller's RNG untouched),
    so augmentation depends on the sample's place in the stream, not on workers or history."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


# ---- RNG state -----------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@contextlib.contextmanager
def rng_untouched(device: torch.device):
    """Evaluation and tracing must not shift the training RNG (or resumed runs would differ)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)


# ---- metrics log ---------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once. On resume, records the
    interrupted run wrote after the checkpoint are dropped, so each iteration appears once."""

    def __init__(self, path: Path, resume_from: int | None = None):
        self.path = path
        if resume_from is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line.strip()
                    and self._keep(json.loads(line), resume_from)]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif resume_from is None:
            path.write_text("")

    @staticmethod
    def _keep(record: dict, start: int) -> bool:
        it = record.get("iteration", 0)
        return it < start or (it == start and record.get("kind") != "trace")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (or of the run folder holding it)."""
    path = Path(path)
    path = path / "metrics.jsonl" if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ---- assignment trace (Fig. 4a / 7 replays, Fig. 4b) ---------------------------------------------
def positives_per_gt(matched_gt: Tensor, gt_valid: Tensor) -> Tensor:
    """Positive anchors of each real GT, ``[G]``, from ``matched_gt[B, A]`` and ``gt_valid[B, M]``."""
    counts = torch.zeros(gt_valid.shape, dtype=torch.int64, device=matched_gt.device)
    counts.scatter_add_(1, matched_gt.clamp(min=0), (matched_gt >= 0).long())
    return counts[gt_valid]


def trace_image_indices(dataset: CocoDetection, count: int) -> list[int]:
    """The first ``count`` images that have at least one (non-crowd) object: a fixed trace set."""
    if count <= 0:
        return []
    chosen = []
    for index, image_id in enumerate(dataset.image_ids):
        if len(dataset.coco.getAnnIds(imgIds=[image_id], iscrowd=False)):
            chosen.append(index)
            if len(chosen) == count:
                break
    return chosen


def write_trace(model: nn.Module, dataset: CocoDetection, indices: list[int], iteration: int,
                run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """Save ``model.inspect_assignment`` on the trace images as ``trace/iter_{iteration:06d}.pt``."""
    model = unwrap(model)
    if not hasattr(model, "inspect_assignment") or not indices:
        return None
    samples = [dataset[i] for i in indices]
    images = [img.to(device) for img, _ in samples]
    targets = [{k: v.to(device) for k, v in t.items() if isinstance(v, Tensor)} for _, t in samples]
    snapshot = model.inspect_assignment(images, targets)
    per_gt = positives_per_gt(snapshot.matched_gt, snapshot.gt_valid) if hasattr(snapshot, "gt_valid") else None
    path = run_dir / "trace" / f"iter_{iteration:06d}.pt"
    atomic_save({"iteration": iteration, "image_ids": [dataset.image_ids[i] for i in indices],
                 "dataset_indices": indices, "snapshot": snapshot, "positives_per_gt": per_gt}, path)
    record = {"kind": "trace", "iteration": iteration, "file": str(path.relative_to(run_dir))}
    if per_gt is not None and per_gt.numel():
        record.update(trace_pos_per_gt=float(per_gt.float().mean()), trace_pos_per_gt_median=float(per_gt.median()))
    return record


def load_trace(path: str | Path) -> dict[str, Any]:
    """A trace file written by :func:`write_trace` (our own output, so full unpickling is fine)."""
    return torch.load(path, map_location="cpu", weights_only=False)


# ---- checkpoints -----------------------------------------------------------------------------------
def training_state(model, optimizer, scheduler, scaler, iteration, cfg, sampler, train_ds) -> dict[str, Any]:
    return {
        "format_version": 1, "iteration": iteration, "config": cfg.to_dict(),
        "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
        "sampler": sampler.state(iteration), "num_classes": train_ds.num_classes,
        "category_ids": list(train_ds.category_ids), "category_names": list(train_ds.category_names),
    }


def find_resume_checkpoint(cfg: TrainConfig) -> tuple[Path, dict] | None:
    """``resume="auto"``: newest good checkpoint of the run folder (None: start fresh); else that path."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        found = find_resumable(cfg.run_dir)
        if found is None:
            log.info("no checkpoint in %s yet: starting from scratch", cfg.run_dir)
        return found
    return resolve_checkpoint(cfg.resume)


def _warn_if_model_differs(cfg: TrainConfig, state: dict, path: Path) -> None:
    saved = state["config"].get("model", {})
    differ = sorted(k for k, v in asdict(cfg.model).items() if k in saved and saved[k] != v)
    if differ:
        log.warning("resuming from %s with different model settings: %s", path, ", ".join(differ))


def build_from_checkpoint(state: dict[str, Any], cfg: TrainConfig | None = None,
                          device: torch.device | str = "cpu", build_model: ModelBuilder | None = None) -> nn.Module:
    """The trained model of a checkpoint (eval mode); ``cfg`` overrides the saved config (post-processing...)."""
    cfg = cfg or TrainConfig.from_dict(state["config"])
    model_cfg = replace(cfg.model, backbone_weights=None)  # the checkpoint holds every weight
    model = (build_model or default_model_builder)(model_cfg, state["num_classes"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit the model config: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def restore_training_state(path: Path, state: dict, cfg: TrainConfig, model, optimizer, scheduler, scaler) -> int:
    """Load a checkpoint into the freshly built objects (and the RNGs); returns its iteration."""
    _warn_if_model_differs(cfg, state, path)
    try:
        unwrap(model).load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model config: {str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"])


def all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


# ---- the loop --------------------------------------------------------------------------------------
def _to_device(images: list[Tensor], targets: list[dict], device: torch.device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}
               for t in targets]
    return images, targets


def train(cfg: TrainConfig, *, build_model: ModelBuilder | None = None, progress: bool = True) -> TrainResult:
    """Train ``cfg`` end to end (resuming if asked), evaluate on the val split, write the run folder.

    Started by torchrun (``WORLD_SIZE`` > 1), it joins the process group first and leaves it at the
    end; with a process group already initialised by the caller, it trains in that group.
    """
    validate(cfg)
    device = resolve_device(cfg.device)
    with distributed.process_group_from_env(device):
        return _train(cfg, device, build_model, progress)


def _train(cfg: TrainConfig, device: torch.device, build_model: ModelBuilder | None, progress: bool) -> TrainResult:
    seed_everything(cfg.seed)  # the same seed in every process: identical initial weights
    train_ds, val_ds = distributed.rank_zero_first(lambda: build_datasets(cfg.data))
    model = (build_model or default_model_builder)(cfg.model, train_ds.num_classes).to(device)
    solver, batch_size, world = cfg.solver, cfg.data.batch_size, distributed.world_size()
    optimizer = build_optimizer(model, solver, batch_size * world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupStepSchedule(solver))
    use_amp = solver.amp and device.type == "cuda"
    if solver.amp and not use_amp:
        log.warning("solver.amp needs CUDA; training in float32 on %s", device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    run_dir, start = cfg.run_dir, 0
    resumed = distributed.from_rank_zero(lambda: find_resume_checkpoint(cfg))  # rank 0 reads, all restore
    if resumed is not None:
        start = restore_training_state(*resumed, cfg, model, optimizer, scheduler, scaler)
    elif is_writer() and (run_dir / LAST).exists():
        log.warning("%s already holds a run; starting afresh (use --resume to continue it)", run_dir)
    log.info("training %s/%s on %d images (%d classes), batch %d%s, lr %.4g, iterations %d..%d on %s → %s",
             cfg.model.arch, cfg.model.assigner, len(train_ds), train_ds.num_classes, batch_size,
             f" x {world} processes" if world > 1 else "", solver.scaled_lr(batch_size * world), start,
             solver.max_iters, device, run_dir)

    metrics_log = None
    if is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        metrics_log = MetricsLog(run_dir / "metrics.jsonl", resume_from=start if resumed else None)
    record = metrics_log.write if metrics_log else (lambda r: None)

    if solver.compile:  # compile the backbone's forward only: state-dict keys stay unchanged
        backbone = getattr(unwrap(model), "backbone", None)
        if backbone is None:
            log.warning("solver.compile: the model has no .backbone; running uncompiled")
        else:
            backbone.forward = torch.compile(backbone.forward)
    if distributed.is_distributed():  # after restoring: DDP starts from rank 0's weights anyway
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DeterministicBatchSampler(len(train_ds), batch_size, cfg.seed, start, solver.max_iters,
                                        distributed.rank(), world)
    # its own generator: creating the loader's iterator must not draw from the (restored) global RNG
    loader = DataLoader(SeededSamples(train_ds), batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    trace_ds = copy.copy(train_ds)
    trace_ds.train = False  # the trace images are never flipped
    trace_indices = trace_image_indices(trace_ds, cfg.trace_images)
    trace_iters = set(cfg.trace_schedule())
    last_good: Path | None = resumed[0] if resumed else None

    def trace(iteration: int) -> None:
        if is_writer() and iteration in trace_iters:
            with rng_untouched(device):
                rec = write_trace(model, trace_ds, trace_indices, iteration, run_dir, device)
            if rec:
                record(rec)

    def evaluate(iteration: int) -> dict[str, float]:  # every process: each predicts its shard
        with rng_untouched(device):
            result = evaluate_coco(unwrap(model), val_ds, cfg.eval_batch_size, device)
        record({"kind": "eval", "iteration": iteration, **result})
        return result

    model.train()
    window: dict[str, list[float]] = defaultdict(list)
    tick = time.perf_counter()
    bar = tqdm(total=solver.max_iters, initial=start, desc="train", dynamic_ncols=True,
               disable=not (progress and is_writer()))
    for iteration, (images, targets) in zip(range(start, solver.max_iters), loader):
        trace(iteration)
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device.type, enabled=use_amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        # total and terms averaged over processes (= the loss of the global batch), in one all-reduce;
        # a non-finite value anywhere makes every process stop at the same iteration
        mean_loss, *mean_terms = distributed.mean_over_processes(
            torch.stack([loss.detach(), *(v.detach() for v in losses.values())])).unbind()
        if not torch.isfinite(mean_loss):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            where = f" (this process, rank {distributed.rank()}: {terms})" if world > 1 else f" ({terms})"
            raise NonFiniteLossError(
                f"non-finite loss at iteration {iteration}{where}; training stopped. Last good checkpoint: "
                f"{last_good or 'none yet'}. Try a lower --lr or --solver.clip_grad_norm 10")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if solver.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = iteration + 1

        window["loss"].append(mean_loss)  # tensors: no device sync until the log line
        for k, v in zip(losses, mean_terms):
            window[k if k.startswith("loss") else f"loss_{k}"].append(v)
        for k, v in getattr(unwrap(model), "last_stats", {}).items():  # this process's (rank 0's) batch
            window[k].append(v)
        bar.update(1)
        if done % cfg.log_every == 0 or done == solver.max_iters:
            elapsed = time.perf_counter() - tick
            stats = {k: sum(float(x) for x in v) / len(v) for k, v in window.items()}
            stats["imgs_per_s"] = len(window["loss"]) * batch_size * world / max(elapsed, 1e-9)
            record({"kind": "train", "iteration": done, "lr": lr, **stats})
            bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items() if k.startswith("loss") or k == "imgs_per_s"})
            window.clear()
            tick = time.perf_counter()

        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == solver.max_iters:
            if not all_finite(model):
                raise NonFiniteLossError(f"weights became non-finite at iteration {iteration}; training stopped "
                                         f"without saving. Last good checkpoint: {last_good or 'none yet'}")
            if is_writer():
                last_good = save_checkpoint(
                    training_state(model, optimizer, scheduler, scaler, done, cfg, sampler, train_ds), run_dir)
            else:
                last_good = run_dir / LAST
        if cfg.eval_every and done % cfg.eval_every == 0 and done != solver.max_iters:
            evaluate(done)
    bar.close()
    final_iter = max(start, solver.max_iters)
    trace(final_iter)

    result = TrainResult(run_dir=run_dir, iteration=final_iter, checkpoint=last_good)
    result.metrics = evaluate(final_iter)
    if is_writer():
        atomic_write_text(run_dir / FINAL_METRICS, json.dumps({"iteration": final_iter, **result.metrics},
                                                                      indent=1))
        from ..viz.training import save_training_plots

        save_training_plots(run_dir)
    distributed.barrier()  # nobody leaves the process group while rank 0 still writes
    return result


# ---- command-line entry points ----------------------------------------------------------------------
#: what a user can cause (bad path, bad file, bad value, diverging run): one line, no traceback
USER_ERRORS = (ValueError, OSError, NonFiniteLossError)


def user_message(error: BaseException) -> str:
    """One line for a user error; an error re-raised by a DataLoader worker (whose message is
    "Caught … in DataLoader worker …" plus the worker's traceback) gives the original message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def run_cli(work: Callable[[], None], on_interrupt: str = "interrupted") -> int:
    """Run an entry point's body: 0 on success; a user error → ``error: …`` on stderr and 1.

    Set ``PAA_DEBUG=1`` to get the full traceback instead.
    """
    try:
        work()
    except USER_ERRORS as e:
        if os.environ.get("PAA_DEBUG"):
            raise
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(on_interrupt, file=sys.stderr)
        return 130
    return 0


__all__ = [
    "DeterministicBatchSampler", "MetricsLog", "NonFiniteLossError", "SeededSamples", "TrainResult",
    "WarmupStepSchedule", "build_datasets", "build_from_checkpoint", "build_optimizer", "is_writer", "load_trace", "lr_at",
    "positives_per_gt", "read_metrics", "resolve_device", "run_cli", "train", "write_trace",
]
