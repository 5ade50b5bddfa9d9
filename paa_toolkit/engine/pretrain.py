"""The miniature of the paper's ImageNet initialisation: a ResNet pre-trained once, cached, on a
classification task built from the embedded data.

    path = pretrained_backbone("resnet18")     # trains once (a few CPU-minutes), later calls reuse the file
    cfg.model.backbone_pretrain = "synthetic"  # the same, from a config (``--model.backbone_pretrain``)

The paper's detectors start from ImageNet weights (§4, Appendix A.1); ours start from random weights, so a
miniature detector must learn its features and its detection at once, and its seed decides both. Here the
ResNet body first learns *which object classes an image holds* (multi-label, one sigmoid per class) on
synthetic images that the detection splits never contain (another generator seed). The task, its
data and its seed are fixed, so every detector seed starts from the same weights, as every COCO run starts
from the same ImageNet file. The file is a torchvision state dict (GroupNorm, ``fc`` included) that
:func:`~paa_toolkit.model.backbone.load_imagenet_weights` loads; stem and res2 are then frozen, as with
ImageNet weights (the ATSS / PAA setting). ``<cache>/pretrained/<backbone>-<digest>.pth`` holds it, with
a JSON of its settings and held-out accuracy beside it.

``backbone_pretrain = "detection"`` (issue 19) pre-trains on detection instead: the bench detector (PAA with the
paper's defaults, :func:`~.presets.bench_budget`) trained once on synthetic images of another generator seed, at
4 × the lr for twice the bench schedule, its ResNet body kept (FPN and head are dropped and start from scratch,
as after ImageNet). The training is an ordinary run (``python -m paa_toolkit.train``, resumable) in
``<cache>/pretrained/<backbone>-detection-<digest>-run/``; the file beside it is its body's state dict.
``"detection-atss"`` is the same pre-training with ATSS assigning (``<backbone>-detection-atss-<digest>``): a body
pre-trained by PAA might favour PAA, and comparing PAA with ATSS on both bodies is the check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn
from torchvision import models
from tqdm import tqdm

from ..data.synthetic import default_cache_dir, make_synthetic_coco
from ..model.backbone import norm_layer_for
from ..model.detector import IMAGENET_MEAN, IMAGENET_STD
from ..safe_load import load_tensors
from . import presets
from .checkpoint import FINAL_METRICS
from .config import TrainConfig
from .run_files import atomic_save, atomic_write_text
from .run_folder import RunFolderError, acquire_lock

log = logging.getLogger(__name__)


def _digest(settings: dict) -> str:
    """A short digest of a pre-training's settings: the cache file's name changes with any of them."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class PretrainSettings:
    """The pre-training task: fixed, so that one cached file serves every run that asks for it."""

    backbone: str = "resnet18"
    image_size: int = 64  # half the bench size: as ImageNet (224 px) is to COCO detection (800 px)
    num_train: int = 4000  # synthetic images (generator seed ``data_seed``: none is in the detection splits)
    num_val: int = 500  # held-out images for the accuracy in the JSON
    data_seed: int = 1000
    seed: int = 0
    iterations: int = 800
    batch_size: int = 32
    lr: float = 0.1  # SGD, cosine decay, after 100 iterations of linear warm-up
    weight_decay: float = 1e-4

    def digest(self) -> str:
        return _digest(asdict(self))


def pretrained_path(settings: PretrainSettings, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "pretrained" / f"{settings.backbone}-{settings.digest()}.pth"


def presence_dataset(root: Path, split: str, num_classes: int) -> tuple[list[Path], torch.Tensor]:
    """Image files of a synthetic split and their multi-label targets ``[N, C]``: 1 where the image holds a
    (non-crowd) object of the class."""
    data = json.loads((root / f"{split}.json").read_text(encoding="utf-8"))
    class_index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    row = {img["id"]: i for i, img in enumerate(data["images"])}
    targets = torch.zeros(len(data["images"]), num_classes)
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            targets[row[ann["image_id"]], class_index[ann["category_id"]]] = 1.0
    return [root / "images" / img["file_name"] for img in data["images"]], targets


def _load_images(files: list[Path]) -> torch.Tensor:
    """``[N, 3, H, W]`` normalised as the detector's transform normalises (ImageNet mean / std)."""
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) / 255 for f in files])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    return (images - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def _mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes of the average precision of ranking the images by score (sklearn)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(targets.numpy(), scores.numpy(), average="macro"))


def train_classifier(settings: PretrainSettings, progress: bool = True) -> tuple[nn.Module, dict[str, float]]:
    """Train the ResNet (GroupNorm, from scratch) on the presence task; returns it and its held-out figures."""
    root = make_synthetic_coco(
        seed=settings.data_seed, num_train=settings.num_train, num_val=settings.num_val, image_size=settings.image_size
    )
    train_files, train_targets = presence_dataset(root, "train", 6)
    val_files, val_targets = presence_dataset(root, "val", 6)
    train_images, val_images = _load_images(train_files), _load_images(val_files)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    model = getattr(models, settings.backbone)(
        weights=None, norm_layer=norm_layer_for("gn"), num_classes=train_targets.shape[1]
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: min(1.0, (it + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * it / settings.iterations))
    )
    model.train()
    for _ in tqdm(range(settings.iterations), desc="pretrain", disable=not progress, dynamic_ncols=True):
        index = torch.randint(len(train_images), (settings.batch_size,), generator=generator)
        flip = torch.rand(settings.batch_size, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], train_images[index].flip(-1), train_images[index])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), train_targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(chunk).sigmoid() for chunk in val_images.split(100)])
    accuracy = float(((scores > 0.5) == val_targets.bool()).float().mean())
    return model, {
        "val_mAP": _mean_average_precision(scores, val_targets),
        "val_label_accuracy": accuracy,
        "train_loss_last": float(loss.detach()),
    }


def _cached(path: Path, produce: Callable[[Path], None]) -> Path:
    """``path``, produced once by ``produce(path)`` when missing. A lock keeps two processes (an ablation grid's
    parallel jobs) from producing it twice; ``produce`` writes atomically, so a file that exists is whole."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            lock = acquire_lock(path.parent, name=f".{path.stem}.lock")
            break
        except RunFolderError:  # another process is producing it: wait for its file
            if path.is_file():
                return path
            time.sleep(5)
    try:
        if not path.is_file():  # another process may have finished it before we took the lock
            produce(path)
    finally:
        lock.release()
    return path


def pretrained_backbone(backbone: str = "resnet18", cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The cached weights of ``backbone`` pre-trained on the presence task (a torchvision state dict); trained
    once when missing."""
    settings = PretrainSettings(backbone=backbone)

    def produce(path: Path) -> None:
        log.info("pre-training %s on the embedded data's presence task (once; cached in %s)", backbone, path)
        start = time.perf_counter()
        model, figures = train_classifier(settings, progress)
        atomic_save(model.state_dict(), path)
        atomic_write_text(
            path.with_suffix(".json"),
            json.dumps(
                {"settings": asdict(settings), **figures, "seconds": round(time.perf_counter() - start, 1)}, indent=1
            ),
        )
        log.info(
            "pre-trained %s: held-out mAP %.3f, label accuracy %.3f (%.0f s)",
            backbone,
            figures["val_mAP"],
            figures["val_label_accuracy"],
            time.perf_counter() - start,
        )

    return _cached(pretrained_path(settings, cache_dir), produce)


# ---- pre-training on detection (issue 19) --------------------------------------------------------------
#: CPU threads of the detection pre-training, whoever starts it. A CPU training's float sums depend on how its
#: work is split over threads, and 4,800 iterations carry the difference into another body: rebuilt from the same
#: settings, AP 0.626 on one thread and 0.623 on two (benchmarks/README.md §8). One fixed count gives a 1-thread
#: grid job and a 2-thread ``train`` the same body. It does not bring back the body of the committed
#: ``bench-pretrained`` results (AP 0.642), built by an earlier version of the trainer.
PRETRAIN_THREADS = 1


@dataclass(frozen=True)
class DetectionPretrainSettings:
    """The detection pre-training: fixed, so that one cached file serves every run that asks for it."""

    backbone: str = "resnet18"
    data_seed: int = 1000  # the synthetic generator's seed: none of its images is in the detection splits
    seed: int = 0
    iterations: int = 4800  # twice the bench schedule
    lr: float = 0.04  # 4 × the bench lr: the schedule scan's fastest (benchmarks/README.md §8)
    rule: str | None = None  # the pre-training's ``assign.rule``: None keeps the bench's (PAA); atss: the bias check

    @property
    def label(self) -> str:
        """Its ``model.backbone_pretrain`` choice: ``detection`` (PAA) or ``detection-<rule>``."""
        return "detection" if self.rule is None else f"detection-{self.rule}"

    @classmethod
    def for_choice(cls, choice: str, backbone: str) -> DetectionPretrainSettings:
        """The settings of a ``model.backbone_pretrain`` choice (``detection`` or ``detection-<rule>``)."""
        _, _, rule = choice.partition("-")
        return cls(backbone=backbone, rule=rule or None)


def detection_pretrain_config(settings: DetectionPretrainSettings) -> TrainConfig:
    """The pre-training run: the bench recipe (PAA, Fig. 3 (c), K = 9, IoU prediction; or ATSS with the same head)
    on another generator seed's images, from random weights."""
    cfg = presets.bench_budget()
    cfg.name = f"pretrain-{settings.backbone}-{settings.label}"
    cfg.assign.rule = settings.rule or cfg.assign.rule
    cfg.seed = settings.seed
    cfg.data.synthetic_seed = settings.data_seed
    cfg.model.backbone, cfg.model.backbone_pretrain, cfg.model.backbone_weights = settings.backbone, "none", None
    cfg.solver.max_iters, cfg.solver.lr = settings.iterations, settings.lr
    cfg.eval_every, cfg.checkpoint_every = settings.iterations // 4, 800
    cfg.test.score_voting = False  # its AP is that of the tables' reference row (weights do not depend on it)
    return cfg


def detection_pretrained_path(settings: DetectionPretrainSettings, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/pretrained/<backbone>-<label>-<digest>.pth`` (label ``detection`` or ``detection-<rule>``), the
    digest that of the whole pre-training run."""
    digest = _digest(detection_pretrain_config(settings).digest_settings())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "pretrained" / f"{settings.backbone}-{settings.label}-{digest}.pth"


def body_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The ResNet body of a detector checkpoint under torchvision's names (what ``backbone_weights`` loads)."""
    state = load_tensors(checkpoint)["model"]
    prefix = "backbone.body."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def detection_pretrained_backbone(
    backbone: str = "resnet18", cache_dir: str | Path | None = None, choice: str = "detection"
) -> Path:
    """The cached ResNet body of the detection pre-training ``choice`` (``detection``: by PAA;
    ``detection-atss``: by ATSS), a torchvision state dict; trained once when missing, as a
    ``python -m paa_toolkit.train`` run that resumes if it was stopped."""
    settings = DetectionPretrainSettings.for_choice(choice, backbone)

    def produce(path: Path) -> None:
        run_dir = path.with_name(f"{path.stem}-run")
        run_dir.mkdir(parents=True, exist_ok=True)
        config_file = run_dir.parent / f"{path.stem}-config.yaml"
        atomic_write_text(config_file, yaml.safe_dump(detection_pretrain_config(settings).to_dict(), sort_keys=False))
        command = [sys.executable, "-m", "paa_toolkit.train", "--config", str(config_file)]
        command += ["--output-dir", str(run_dir), "--resume"]
        log.info("pre-training %s on detection (once; cached in %s): %s", backbone, path, " ".join(command))
        start = time.perf_counter()
        threads = {name: str(PRETRAIN_THREADS) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        done = subprocess.run(command, check=False, env={**os.environ, **threads})
        if done.returncode != 0:
            raise RuntimeError(f"the {settings.label} pre-training failed (exit {done.returncode}); its run: {run_dir}")
        metrics = json.loads((run_dir / FINAL_METRICS).read_text(encoding="utf-8"))
        atomic_save(body_state_dict(run_dir / "last.pth"), path)
        figures = {k: metrics.get(k) for k in ("AP", "AP50", "AP75", "APs", "APm")}
        atomic_write_text(
            path.with_suffix(".json"),
            json.dumps(
                {
                    "settings": asdict(settings),
                    "cpu_threads": PRETRAIN_THREADS,
                    "run": str(run_dir),
                    "val_metrics": figures,
                    "seconds": round(time.perf_counter() - start, 1),
                },
                indent=1,
            ),
        )
        log.info("pre-trained %s (%s): AP %.3f on its own val split", backbone, settings.label, figures["AP"] or 0.0)

    return _cached(detection_pretrained_path(settings, cache_dir), produce)


def shares_pretraining_start(cfg) -> bool:
    """Whether ``cfg`` (a :class:`~.config.TrainConfig`) starts its FPN and head from the very weights its detection
    pre-training started from: ``model.backbone_pretrain = detection*`` with the pre-training's own seed.

    The trainer seeds before it builds the model, so the same seed draws the same FPN and, for the detectors with
    PAA's head (PAA, ATSS, IoU assignment), the same head; torchvision's FCOS and RetinaNet share the FPN only.
    The pre-trained body was trained with exactly those. Such a run begins with body and head co-adapted (measured
    on ``bench-pretrained``: 6–17 AP points ahead of seeds 1–5 at iteration 300 and 2.4–2.8 at the end, every row;
    benchmarks/README.md §8): a valid run, and a valid member of a pair that shares it, but not an independent
    draw for a seed spread."""
    return cfg.model.backbone_pretrain.startswith("detection") and cfg.seed == DetectionPretrainSettings.seed


def with_pretrained_weights(cfg):
    """``cfg`` (a :class:`~.config.TrainConfig`) with ``model.backbone_pretrain`` resolved to the cached file
    (trained first when missing); ``cfg`` itself when it asks for no pre-training."""
    if cfg.model.backbone_pretrain == "none":
        return cfg
    if cfg.model.backbone_pretrain.startswith("detection"):
        path = detection_pretrained_backbone(cfg.model.backbone, choice=cfg.model.backbone_pretrain)
        if shares_pretraining_start(cfg):
            log.warning(
                "seed %d is the detection pre-training's own seed: the FPN (and PAA's head) start from the weights the "
                "pre-trained body was trained with, so this run is not an independent seed (choose seed ≥ 1 "
                "for a seed spread; benchmarks/README.md §8)",
                cfg.seed,
            )
    else:
        path = pretrained_backbone(cfg.model.backbone)
    return replace(cfg, model=replace(cfg.model, backbone_weights=str(path)))


__all__ = [
    "DetectionPretrainSettings",
    "PretrainSettings",
    "body_state_dict",
    "detection_pretrain_config",
    "detection_pretrained_backbone",
    "detection_pretrained_path",
    "presence_dataset",
    "pretrained_backbone",
    "pretrained_path",
    "shares_pretraining_start",
    "train_classifier",
    "with_pretrained_weights",
]
