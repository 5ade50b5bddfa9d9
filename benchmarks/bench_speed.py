"""Benchmark: PAA (IoU prediction, score voting) vs torchvision's FCOS — training step and inference.

Both detectors come from :func:`paa_toolkit.model.detector.build_model` with the same backbone
(ResNet + FPN P3–P7, GroupNorm), the same head width and depth, resolution, batch and
post-processing thresholds; ``arch="fcos"`` is ``torchvision.models.detection.FCOS`` itself.

    python benchmarks/bench_speed.py [--backbone resnet18] [--size 320] [--batch 2] [--width 64]
                                     [--rounds 15] [--threads 1] [--profile]

* train step = forward + loss (ours: PAA assignment, Eq. 8; FCOS: centre sampling + its loss)
  + backward + SGD step, on synthetic images with their ground truth;
* inference = eval-mode forward incl. post-processing (ours: unified score, NMS and score voting,
  Eq. 9–10; FCOS: its ``postprocess_detections``), in two regimes: the configured
  ``score_thresh`` (an untrained head scores ~0.01, so almost nothing passes: network-bound), and
  ``score_thresh = 0`` (every level's top-1000 candidates go through NMS and voting: the heaviest
  post-processing load).

The CPU may be shared with other jobs: the two models are measured alternately (A B, B A, …) and
each figure is a median over rounds; the ratio is the median of the per-round ratios. Shares
(assignment, loss, post-processing, voting) are measured with wall-clock timers around those
calls inside the same timed steps (CPU: synchronous, so the timers are exact; CUDA: every timer
synchronises the device before and after, so it measures the GPU work it encloses).
:class:`SpeedBench` is the same measurement as a function (``benchmarks/gpu_check.py`` runs it on
CUDA, with and without AMP).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import paa_toolkit.model.detector as detector_module
import paa_toolkit.model.postprocess as postprocess_module
from paa_toolkit.data.coco import CocoDetection
from paa_toolkit.data.synthetic import make_synthetic_coco
from paa_toolkit.engine.config import ModelConfig
from paa_toolkit.model.detector import build_model
from paa_toolkit.model.postprocess import InferenceConfig

TIMERS: dict[str, float] = defaultdict(float)
#: called before and after every timed region: ``torch.cuda.synchronize`` on CUDA, nothing on CPU
SYNC: list[Callable[[], None]] = [lambda: None]


def timed(name: str, fn: Callable) -> Callable:
    """``fn`` that adds its wall time to ``TIMERS[name]``."""

    def wrapper(*args, **kwargs):
        SYNC[0]()
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SYNC[0]()
            TIMERS[name] += time.perf_counter() - start

    wrapper.timed = True
    return wrapper


def instrument(model: torch.nn.Module, arch: str) -> None:
    """Timers around the parts whose share we report."""
    if arch == "paa":
        model.assign = timed("paa_assign", model.assign)
    else:
        model.compute_loss = timed("fcos_match_and_loss", model.compute_loss)
        model.postprocess_detections = timed("fcos_postprocess", model.postprocess_detections)


def instrument_paa_module() -> None:
    """Timers around the library functions (once per process: a second call would count twice)."""
    if getattr(postprocess_module.vote_boxes, "timed", False):
        return
    detector_module.detection_losses = timed("paa_loss", detector_module.detection_losses)
    detector_module.postprocess_detections = timed("paa_postprocess", detector_module.postprocess_detections)
    # postprocess_detections looks score voting up in its module's globals at each call
    postprocess_module.vote_boxes = timed("paa_voting", postprocess_module.vote_boxes)


def batch_of(size: int, batch: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict], int]:
    """``batch`` synthetic images with at least one object each (as in training), and the class count."""
    folder = Path(tempfile.gettempdir()) / f"paa_bench_speed_{size}"
    root = make_synthetic_coco(folder, seed=seed, num_train=max(4 * batch, 8), num_val=1, image_size=size)
    data = CocoDetection(root / "images", root / "train.json")
    samples = [data[i] for i in range(len(data)) if len(data[i][1]["boxes"])][:batch]
    images = [img for img, _ in samples]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in samples]
    return images, targets, data.num_classes


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


@dataclass
class CaseResult:
    """One measured case: medians over the interleaved rounds (ms) and the per-round shares."""

    ours_ms: float
    fcos_ms: float
    ratio: float  # median of the per-round ratios ours / FCOS
    parts: dict[str, list[float]]  # timer name -> per-round share of the step; name + "_ms" -> seconds
    rounds: int


class SpeedBench:
    """Both detectors on the same batch, ready to be timed: :meth:`measure` gives a :class:`CaseResult` per case."""

    def __init__(
        self,
        backbone: str = "resnet18",
        size: int = 320,
        batch: int = 2,
        width: int = 64,
        num_convs: int = 4,
        size_divisible: int = 32,
        device: str | torch.device = "cpu",
        amp: bool = False,
    ):
        self.device, self.amp = torch.device(device), amp
        SYNC[0] = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        images, targets, num_classes = batch_of(size, batch)
        self.images = [img.to(self.device) for img in images]
        self.targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        self.base = ModelConfig(
            backbone=backbone,
            width=width,
            num_convs=num_convs,
            min_size=size,
            max_size=size,
            backbone_norm="gn",
            size_divisible=size_divisible,
        )
        self.models, self.optimizers = {}, {}
        for arch in ("paa", "fcos"):
            torch.manual_seed(0)
            self.models[arch] = build_model(replace(self.base, arch=arch), num_classes, inference=InferenceConfig()).to(
                self.device
            )  # same thresholds
            self.optimizers[arch] = torch.optim.SGD(self.models[arch].parameters(), lr=1e-4, momentum=0.9)
            instrument(self.models[arch], arch)
        instrument_paa_module()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp)
        self.cases: dict[str, Callable[[str], None]] = {
            "train step": self.train_step,
            f"inference, score_thresh {InferenceConfig.score_thresh}": lambda arch: self.inference(
                arch, InferenceConfig.score_thresh
            ),
            "inference, score_thresh 0 (all candidates)": lambda arch: self.inference(arch, 0.0),
        }

    def train_step(self, arch: str) -> None:
        model, opt = self.models[arch], self.optimizers[arch]
        model.train()
        with torch.autocast(self.device.type, enabled=self.amp):
            losses = model(self.images, self.targets)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(sum(losses.values())).backward()
        self.scaler.step(opt)
        self.scaler.update()

    def inference(self, arch: str, score_thresh: float) -> None:
        model = self.models[arch].eval()
        if arch == "paa":
            model.inference = replace(model.inference, score_thresh=score_thresh)
        else:
            model.score_thresh = score_thresh
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
            model(self.images)

    def measure(
        self, rounds: int = 15, warmup: int = 2, deadline: float | None = None, min_rounds: int = 3
    ) -> dict[str, CaseResult]:
        """Every case, the two models alternately (A B, B A, …); past ``deadline`` (a ``time.perf_counter``
        value) a case stops after ``min_rounds`` measured rounds."""
        results = {}
        for case, step in self.cases.items():
            totals: dict[str, list[float]] = {"paa": [], "fcos": []}
            parts: dict[str, list[float]] = defaultdict(list)
            for r in range(warmup + rounds):
                if deadline is not None and r >= warmup + min_rounds and time.perf_counter() > deadline:
                    break
                for arch in ("paa", "fcos") if r % 2 == 0 else ("fcos", "paa"):  # interleaved A B, B A, ...
                    TIMERS.clear()
                    SYNC[0]()
                    start = time.perf_counter()
                    step(arch)
                    SYNC[0]()
                    elapsed = time.perf_counter() - start
                    if r >= warmup:
                        totals[arch].append(elapsed)
                        for name, seconds in TIMERS.items():
                            parts[name].append(seconds / elapsed)
                            parts[name + "_ms"].append(seconds)
            ratio = statistics.median(a / b for a, b in zip(totals["paa"], totals["fcos"]))
            results[case] = CaseResult(
                median_ms(totals["paa"]), median_ms(totals["fcos"]), ratio, dict(parts), len(totals["paa"])
            )
            print(f"  measured {case}", flush=True)
        return results


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    bench = SpeedBench(args.backbone, args.size, args.batch, args.width, args.num_convs, args.size_divisible)
    results = bench.measure(args.rounds, args.warmup)
    targets = bench.targets

    print(
        f"\n{args.backbone}, width {args.width}, {args.num_convs} convs/tower, {args.size}x{args.size} px, batch "
        f"{args.batch}, {sum(len(t['boxes']) for t in targets)} objects, {args.threads} thread(s), "
        f"{args.rounds} interleaved rounds (+{args.warmup} warm-up), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}\n"
    )
    print("| measurement | ours: PAA + IoU pred. (ms) | torchvision FCOS (ms) | ours / FCOS | target |")
    print("|---|---:|---:|---:|---:|")
    targets_text = {"train step": "≤ 1.15×"}
    for case, res in results.items():
        print(
            f"| {case} | {res.ours_ms:.1f} | {res.fcos_ms:.1f} | **{res.ratio:.2f}×** "
            f"| {targets_text.get(case, '≤ 1.10×')} |"
        )
    print("\n| share (median over rounds) | ours | FCOS |")
    print("|---|---:|---:|")
    train_parts = results["train step"].parts
    print(f"| training step: assignment (PAA, Procedure 1) | {share(train_parts, 'paa_assign')} | — |")
    print(f"| training step: loss (Eq. 8) | {share(train_parts, 'paa_loss')} | — |")
    print(f"| training step: FCOS matching + loss (`compute_loss`) | — | {share(train_parts, 'fcos_match_and_loss')} |")
    for case in list(results)[1:]:
        parts = results[case].parts
        print(f"| {case}: post-processing | {share(parts, 'paa_postprocess')} | {share(parts, 'fcos_postprocess')} |")
        print(f"| {case}: score voting (Eq. 9–10) | {share(parts, 'paa_voting')} | — |")

    if args.profile:
        for case in ("train step", "inference, score_thresh 0 (all candidates)"):
            for arch in ("paa", "fcos"):
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for _ in range(3):
                        bench.cases[case](arch)
                print(f"\n### profile: {case}, {arch} (3 calls)\n")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def share(parts: dict[str, list[float]], name: str) -> str:
    if name not in parts:
        return "—"
    return f"{100 * statistics.median(parts[name]):.1f} % ({1000 * statistics.median(parts[name + '_ms']):.1f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--size-divisible",
        type=int,
        default=32,
        help="padding of both models' batches (torchvision FCOS's own default: 32)",
    )
    parser.add_argument("--width", type=int, default=64, help="FPN and head channels (paper: 256)")
    parser.add_argument("--num-convs", type=int, default=4, help="convs per head tower (paper: 4)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler tables")
    parser.add_argument("--profile-rows", type=int, default=25)
    with contextlib.suppress(KeyboardInterrupt):
        run(parser.parse_args())


if __name__ == "__main__":
    main()
