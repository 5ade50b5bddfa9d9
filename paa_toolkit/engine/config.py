"""The whole configuration as plain dataclasses, with typed overrides from YAML/JSON and dotted names.

    cfg = TrainConfig()                                   # defaults: the CPU demo on the synthetic dataset
    set_field(cfg, "solver.lr", "0.02")                   # one field by its dotted name, value converted
    cfg = TrainConfig.from_dict(cfg.to_dict())            # round trip (run folder, checkpoints)

Every field has a dotted name (``solver.lr``, ``assign.rule``, ``seed``); the command line sets it as
``--<section>.<field> VALUE`` (:mod:`paa_toolkit.cli`). :func:`validate` checks everything up front
and raises :class:`ConfigError` naming the field, the value and the valid choices.

The defaults are the paper's settings (§4, Appendix A.1) scaled down so that ``python -m
paa_toolkit.train`` finishes on a 2-core CPU; the ``DEMO_*`` constants below are what was scaled.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import math
import re
import tokenize
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from ..assign import GMM_INITS, LOW_QUALITY_POLICIES, RULES, AssignConfig, settings_problems
from ..data.build import DATASETS, DataConfig
from ..data.coco import BAD_ANNOTATION_POLICIES
from ..distributed import device_name_problem
from ..model.backbone import BACKBONES, NORMS, PYRAMIDS
from ..model.head import AUX_CHOICES
from ..model.losses import LossWeights
from ..model.postprocess import InferenceConfig
from .precision import BF16_CHOICES

# ---- the scaled-down demo (paper values in comments) ------------------------------------------
DEMO_MAX_ITERS = 600  # paper: 135k (ablations), 180k
DEMO_WARMUP_ITERS = 50  # paper: 500
DEMO_MIN_SIZE = 256  # paper: 800 (640–800 multi-scale for 180k)
DEMO_MAX_SIZE = round(DEMO_MIN_SIZE * 1333 / 800)  # paper: 1333
DEMO_WIDTH = 64  # tower + FPN channels; paper: 256
DEMO_BATCH_SIZE = DataConfig.batch_size  # images per process; paper: 16 (8 GPUs x 2)
DEMO_LR = 0.01  # paper: 0.01 for a batch of 16

# ---- valid choices (validated up front, listed in error messages) ----------------------------
ARCHS = ("paa", "fcos", "retinanet")
#: model.backbone_pretrain: random init, or the toolkit's pre-training on the embedded data (engine.pretrain):
#: its presence task (synthetic) or detection on another generator seed, by PAA (detection) or by ATSS
#: (detection-atss: the check that a PAA-trained body does not favour PAA)
PRETRAIN_CHOICES = ("none", "synthetic", "detection", "detection-atss")
#: Appendix A.1: lr ÷10 at 90k and 120k of 135k iterations — kept as fractions of the run.
PAPER_STEP_FRACTIONS = (90 / 135, 120 / 135)


#: fields added after digests of the whole config keyed cached runs, with their defaults (TrainConfig.digest_settings)
LATER_FIELDS: dict[str, Any] = {"model.backbone_trainable_layers": None, "solver.new_layers_lr_factor": 1.0}


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and what is allowed."""


@dataclass
class ModelConfig:
    """The detector (§3, Fig. 5) and its training loss (Eq. 8). ``arch`` "fcos"/"retinanet": torchvision baselines."""

    arch: str = "paa"  # detector: PAA, or torchvision's FCOS / RetinaNet on the same backbone
    backbone: str = "resnet18"  # torchvision ResNet / ResNeXt body of the FPN (paper: resnet50 and up)
    backbone_weights: str | None = None  # local torchvision ImageNet state dict; none: random init (no downloads)
    backbone_pretrain: str = "none"  # none; synthetic / detection / detection-atss: pre-trained once (cached)
    backbone_norm: str = "gn"  # ResNet normalisation: frozen_bn with ImageNet weights (paper), gn or bn from scratch
    backbone_trainable_layers: int | None = None  # of layer4…conv1, how many train; none: 3 pre-trained (§4.1), 5 else
    dcn: bool = False  # deformable convs in res3–res5 and the last tower conv (Table 3 "-DCN")
    pyramid: str = "p3-p7"  # FPN levels: p3-p7 (paper, strides 8–128) or p2-p6 (strides 4–64, for small objects)
    width: int = DEMO_WIDTH  # FPN and head tower channels (paper: 256)
    num_convs: int = 4  # convs per head tower (paper: 4)
    aux: str = "iou"  # auxiliary head (Table 1 right): IoU prediction (§3.2), FCOS centerness, or none
    anchor_scale: float = 8.0  # anchor size = stride × this (paper: 8; Table 4: 4–10)
    box_loss_weight: float = LossWeights.box  # λ1 of Eq. (8)
    aux_loss_weight: float = LossWeights.aux  # λ2 of Eq. (8)
    min_size: int | list[int] = DEMO_MIN_SIZE  # training shorter side: N, or [lo, hi] for multi-scale (paper: 800)
    max_size: int = DEMO_MAX_SIZE  # longest image side after resizing (paper: 1333)
    size_divisible: int = 128  # pad batches to a multiple of this: P7's stride (reference code: 32)


@dataclass
class SolverConfig:
    """SGD with linear warm-up and step decay (Appendix A.1), the steps at the paper's fractions of the run."""

    lr: float = DEMO_LR  # base lr, for solver.reference_batch_size images; the run uses lr × batch / reference
    reference_batch_size: int = 16  # the batch solver.lr is meant for; lr scales linearly (Goyal et al. [9])
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # SGD weight decay
    warmup_iters: int = DEMO_WARMUP_ITERS  # linear warm-up length (paper: 500)
    warmup_factor: float = 1.0 / 3  # lr factor at the first warm-up iteration
    step_fractions: list[float] = field(default_factory=lambda: list(PAPER_STEP_FRACTIONS))  # lr × gamma here
    gamma: float = 0.1  # lr factor at each step
    new_layers_lr_factor: float = 1.0  # lr × this for FPN + head, the body keeps the lr (1: the paper)
    clip_grad_norm: float = 0.0  # clip the gradient norm to this; 0: off
    max_iters: int = DEMO_MAX_ITERS  # training iterations (paper: 90k–180k)
    amp: bool = False  # mixed precision; CUDA only (ignored on CPU)
    compile: bool = False  # torch.compile the backbone
    bf16: str = "off"  # CPU: bf16 autocast of backbone + FPN: off, auto (where the CPU has native bf16), on
    channels_last: bool = False  # channels-last memory format of the model (a CPU / GPU speed lever)

    def scaled_lr(self, batch_size: int) -> float:
        """The learning rate actually used for a total batch of ``batch_size`` images."""
        return self.lr * batch_size / self.reference_batch_size

    def milestones(self) -> list[int]:
        """Iterations at which the lr is multiplied by ``gamma`` (90k/135k, 120k/135k of the run)."""
        return [round(f * self.max_iters) for f in self.step_fractions]


@dataclass
class TrainConfig:
    """One training run: what to build, how to optimise it, where to write, what to record."""

    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    test: InferenceConfig = field(default_factory=InferenceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    name: str = "demo"  # run name: the run folder is runs/<name> unless output_dir is set
    output_dir: str | None = None  # run folder; none: runs/<name>
    seed: int = 0  # seeds weights, data order and augmentation (same seed: same run on CPU)
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps
    resume: str | None = None  # continue a run: alone (auto) from the run folder's last good checkpoint; or a .pth
    overwrite: bool = False  # replace a run already in output_dir (deletes its checkpoints, metrics, traces, plots)
    log_every: int = 20  # iterations per metrics.jsonl training record
    checkpoint_every: int = 200  # iterations per checkpoint; 0: only at the end
    eval_every: int = 0  # iterations per COCO evaluation on the val split; 0: only at the end
    eval_batch_size: int = 4  # images per evaluation batch
    trace_iters: list[int] | None = None  # iterations whose assignment is traced; none: 0, 10 %, 25 %, 50 %, end
    trace_every: int = 0  # also trace every N iterations; 0: off
    trace_images: int = 4  # fixed training images (no flip) traced at each trace iteration

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def trace_schedule(self) -> list[int]:
        """Iterations (completed steps) at which the assignment is traced; 0 = before the first step."""
        n = self.solver.max_iters
        its = set(self.trace_iters) if self.trace_iters is not None else {0, n // 10, n // 4, n // 2, n}
        if self.trace_every > 0:
            its |= set(range(0, n + 1, self.trace_every))
        return sorted(its)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest_settings(self) -> dict[str, Any]:
        """:meth:`to_dict` for a cache key: a field added after such keys existed (:data:`LATER_FIELDS`) is left
        out at its default, so that the runs cached before it (pre-trained bodies, the course detector) keep
        their names."""
        settings = self.to_dict()
        for dotted, default in LATER_FIELDS.items():
            section, key = dotted.split(".")
            if settings[section].get(key) == default:
                del settings[section][key]
        return settings

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys or wrongly typed values raise :class:`ConfigError`."""
        cfg = cls()
        apply_dict(cfg, data)
        return cfg


SECTIONS = {
    "model": ModelConfig,
    "assign": AssignConfig,
    "test": InferenceConfig,
    "data": DataConfig,
    "solver": SolverConfig,
}
#: the fields whose value is one of a few names: checked by :func:`validate`, listed by ``--help``
CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ARCHS,
    "model.backbone": BACKBONES,
    "model.backbone_norm": NORMS,
    "model.aux": AUX_CHOICES,
    "model.pyramid": tuple(PYRAMIDS),
    "model.backbone_pretrain": PRETRAIN_CHOICES,
    "solver.bf16": BF16_CHOICES,
    "assign.rule": RULES,
    "assign.low_quality": LOW_QUALITY_POLICIES,
    "assign.gmm_init": GMM_INITS,
    "data.dataset": DATASETS,
    "data.on_bad_annotation": BAD_ANNOTATION_POLICIES,
}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the source of dataclass ``cls`` and of its dataclass
    bases (AssignConfig inherits each rule's settings): the one place a setting is described (``--help``
    prints it); ``{}`` when the source is not available."""
    docs = {}
    for base in cls.__mro__[-1::-1]:
        if base is not cls and is_dataclass(base):
            docs.update(field_docs(base))
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return docs
    comments = {
        tok.start[0]: tok.string.lstrip("# ").strip()
        for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline)
        if tok.type == tokenize.COMMENT
    }
    names = {f.name for f in fields(cls)}
    for number, line in enumerate(lines, start=1):
        match = re.match(r"    (\w+)\s*:", line)
        if match and match.group(1) in names and number in comments:
            docs[match.group(1)] = comments[number]
    return docs


def get_field(cfg: TrainConfig, dotted: str) -> Any:
    """The value of one field by its dotted name (``get_field(cfg, "solver.lr")``)."""
    section, _, name = dotted.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


# ---- typed values -------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` (from YAML/JSON or a command-line string) as type ``hint``; :class:`ConfigError` if impossible."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        for option in (o for o in options if o is not type(None)):  # declared order: int before list[int]
            try:
                return coerce(value, option, name)
            except ConfigError:
                pass
        raise ConfigError(f"{name}: cannot read {value!r} as {_type_name(hint)}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # "[a, b]" (YAML flow list) or "a,b" or a single "a"
            text = value.strip()
            try:
                value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            except yaml.YAMLError:
                raise ConfigError(f"{name}: expected a list like [a, b] or a,b, got {text!r}") from None
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [coerce(v, item, name) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{name}: expected {hint.__name__}, got {value!r}") from None
        if not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ConfigError(f"{name}: expected a finite {hint.__name__}, got {value!r}")
        if hint is int:
            if float(number) != int(number):
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
            return int(number)
        return float(number)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{name}: unsupported type {_type_name(hint)}")


def set_field(cfg: TrainConfig, dotted: str, value: Any) -> None:
    """``set_field(cfg, "solver.lr", "0.02")``: set one field by its dotted name, converting the value."""
    parts = dotted.split(".")
    target: Any = cfg
    if len(parts) == 2 and parts[0] in SECTIONS:
        target = getattr(cfg, parts[0])
    elif len(parts) != 1 or parts[0] in SECTIONS:
        raise ConfigError(f"unknown config field {dotted!r}; sections: {', '.join(SECTIONS)}")
    hints = _hints(type(target))
    key = parts[-1]
    if key not in hints:
        valid = ", ".join(f.name for f in fields(target) if f.name not in SECTIONS)
        raise ConfigError(f"unknown config field {dotted!r}; valid fields: {valid}")
    setattr(target, key, coerce(value, hints[key], dotted))


def apply_dict(cfg: TrainConfig, data: dict[str, Any], source: str = "config") -> None:
    """Apply a nested ``{"model": {...}, "solver": {...}, "seed": 1}`` dict onto ``cfg``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections, got {type(data).__name__}")
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section {key!r} must be a mapping, got {value!r}")
            for sub, v in value.items():
                set_field(cfg, f"{key}.{sub}", v)
        else:
            set_field(cfg, key, value)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file (a nested mapping, as written by :meth:`TrainConfig.to_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {str(e).splitlines()[0]}"
        ) from None
    return data or {}


# ---- validation ---------------------------------------------------------------------------------
def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: unknown value {value!r}; valid choices: {', '.join(choices)}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every value before anything is built; the first problem raises :class:`ConfigError`."""
    m, a, t, d, s = cfg.model, cfg.assign, cfg.test, cfg.data, cfg.solver
    for dotted, choices in CHOICES.items():
        _choice(dotted, get_field(cfg, dotted), choices)
    _check(
        m.backbone_weights is None or Path(m.backbone_weights).is_file(),
        f"model.backbone_weights: file not found: {m.backbone_weights}",
    )
    _check(
        m.backbone_pretrain == "none" or (m.backbone_weights is None and m.backbone_norm == "gn"),
        f"model.backbone_pretrain {m.backbone_pretrain!r} gives GroupNorm weights: it needs model.backbone_norm "
        f"gn (got {m.backbone_norm}) and no model.backbone_weights (got {m.backbone_weights})",
    )
    _check(
        m.backbone_trainable_layers is None or 0 <= m.backbone_trainable_layers <= 5,
        f"model.backbone_trainable_layers must be in [0, 5] (layer4, layer3, layer2, layer1, conv1) or none, "
        f"got {m.backbone_trainable_layers}",
    )
    _check(m.width >= 1, f"model.width must be >= 1, got {m.width}")
    _check(
        m.arch != "fcos" or m.width % 32 == 0,
        f"model.width must be a multiple of 32 for arch fcos "
        f"(torchvision's FCOS head uses GroupNorm(32)), got {m.width}",
    )
    _check(m.num_convs >= 0, f"model.num_convs must be >= 0, got {m.num_convs}")
    _check(m.anchor_scale > 0, f"model.anchor_scale must be > 0, got {m.anchor_scale}")
    _check(m.box_loss_weight >= 0, f"model.box_loss_weight (λ1) must be >= 0, got {m.box_loss_weight}")
    _check(m.aux_loss_weight >= 0, f"model.aux_loss_weight (λ2) must be >= 0, got {m.aux_loss_weight}")
    sizes = [m.min_size] if isinstance(m.min_size, int) else m.min_size
    _check(
        len(sizes) in (1, 2) and all(v >= 32 for v in sizes) and sizes == sorted(sizes),
        f"model.min_size must be an int >= 32 or a range [lo, hi] with 32 <= lo <= hi, got {m.min_size}",
    )
    _check(m.max_size >= max(sizes), f"model.max_size ({m.max_size}) must be >= model.min_size ({m.min_size})")
    _check(m.size_divisible >= 1, f"model.size_divisible must be >= 1, got {m.size_divisible}")

    problems = settings_problems(a)  # each rule's settings class checks its own fields (assign.registry)
    _check(not problems, f"assign.{problems[0]}" if problems else "")

    _check(t.min_size is None or t.min_size >= 32, f"test.min_size must be >= 32, got {t.min_size}")
    _check(0 <= t.score_thresh < 1, f"test.score_thresh must be in [0, 1), got {t.score_thresh}")
    _check(0 < t.nms_thresh <= 1, f"test.nms_thresh must be in (0, 1], got {t.nms_thresh}")
    _check(t.topk_per_level >= 1, f"test.topk_per_level must be >= 1, got {t.topk_per_level}")
    _check(t.detections_per_img >= 1, f"test.detections_per_img must be >= 1, got {t.detections_per_img}")
    _check(t.voting_sigma > 0, f"test.voting_sigma must be > 0, got {t.voting_sigma}")
    _check(all(v >= 32 for v in t.tta_scales), f"test.tta_scales must be sizes >= 32, got {t.tta_scales}")

    if d.dataset == "coco":
        _check(
            d.root is not None or (d.image_dir and d.train_ann and d.val_ann),
            "data.dataset 'coco' needs data.root (or data.image_dir, data.train_ann and data.val_ann)",
        )
        for name in ("root", "image_dir"):
            value = getattr(d, name)
            _check(value is None or Path(value).is_dir(), f"data.{name}: folder not found: {value}")
        for name in ("train_ann", "val_ann"):
            value = getattr(d, name)
            _check(value is None or Path(value).is_file(), f"data.{name}: file not found: {value}")
    else:
        _check(
            d.synthetic_num_train >= 1 and d.synthetic_num_val >= 1,
            f"data.synthetic_num_train/num_val must be >= 1, got {d.synthetic_num_train}/{d.synthetic_num_val}",
        )
        _check(d.synthetic_image_size >= 32, f"data.synthetic_image_size must be >= 32, got {d.synthetic_image_size}")
    _check(0 <= d.flip_prob <= 1, f"data.flip_prob must be in [0, 1], got {d.flip_prob}")
    _check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    _check(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")

    _check(s.lr > 0, f"solver.lr must be > 0, got {s.lr}")
    _check(s.reference_batch_size >= 1, f"solver.reference_batch_size must be >= 1, got {s.reference_batch_size}")
    _check(0 <= s.momentum < 1, f"solver.momentum must be in [0, 1), got {s.momentum}")
    _check(s.weight_decay >= 0, f"solver.weight_decay must be >= 0, got {s.weight_decay}")
    _check(s.warmup_iters >= 0, f"solver.warmup_iters must be >= 0, got {s.warmup_iters}")
    _check(0 < s.warmup_factor <= 1, f"solver.warmup_factor must be in (0, 1], got {s.warmup_factor}")
    _check(
        all(0 < f < 1 for f in s.step_fractions) and s.step_fractions == sorted(s.step_fractions),
        f"solver.step_fractions must be increasing fractions of the run in (0, 1), got {s.step_fractions}",
    )
    _check(0 < s.gamma <= 1, f"solver.gamma must be in (0, 1], got {s.gamma}")
    _check(s.new_layers_lr_factor > 0, f"solver.new_layers_lr_factor must be > 0, got {s.new_layers_lr_factor}")
    _check(s.clip_grad_norm >= 0, f"solver.clip_grad_norm must be >= 0 (0: off), got {s.clip_grad_norm}")
    _check(s.max_iters >= 1, f"solver.max_iters must be >= 1, got {s.max_iters}")

    _check(bool(cfg.name) and "/" not in cfg.name, f"name must be a non-empty folder name, got {cfg.name!r}")
    _check(device_name_problem(cfg.device) is None, f"device: {device_name_problem(cfg.device)}")
    _check(
        not (cfg.overwrite and cfg.resume),
        "resume and overwrite exclude each other: --resume continues the "
        "run in the output folder, --overwrite deletes it and starts afresh",
    )
    for name in ("log_every", "checkpoint_every", "eval_every", "trace_every", "trace_images"):
        _check(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)}")
    _check(cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}")
    _check(cfg.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {cfg.eval_batch_size}")
    bad = [t for t in (cfg.trace_iters or []) if not 0 <= t <= s.max_iters]
    _check(not bad, f"trace_iters must lie in [0, solver.max_iters={s.max_iters}], got {bad}")
    return cfg


__all__ = [
    "CHOICES",
    "LATER_FIELDS",
    "SECTIONS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "SolverConfig",
    "TrainConfig",
    "apply_dict",
    "coerce",
    "field_docs",
    "get_field",
    "load_config_file",
    "set_field",
    "validate",
]
