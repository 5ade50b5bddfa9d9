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
calls inside the same timed steps (CPU: synchronous, so the timers are exact).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

import paa_toolkit.model.detector as detector_module
import paa_toolkit.model.postprocess as postprocess_module
from paa_toolkit.data.coco import CocoDetection
from paa_toolkit.data.synthetic import make_synthetic_coco
from paa_toolkit.engine.config import ModelConfig
from paa_toolkit.model.detector import build_model
from paa_toolkit.model.postprocess import InferenceConfig

TIMERS: dict[str, float] = defaultdict(float)


def timed(name: str, fn: Callable) -> Callable:
    """``fn`` that adds its wall time to ``TIMERS[name]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMERS[name] += time.perf_counter() - start
    return wrapper


def instrument(model: torch.nn.Module, arch: str) -> None:
    """Timers around the parts whose share we report."""
    if arch == "paa":
        model.assign = timed("paa_assign", model.assign)
    else:
        model.compute_loss = timed("fcos_match_and_loss", model.compute_loss)
        model.postprocess_detections = timed("fcos_postprocess", model.postprocess_detections)


def instrument_paa_module() -> None:
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


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    images, targets, num_classes = batch_of(args.size, args.batch)
    base = ModelConfig(backbone=args.backbone, width=args.width, num_convs=args.num_convs, min_size=args.size,
                       max_size=args.size, backbone_norm="gn", size_divisible=args.size_divisible)
    test = InferenceConfig()  # the same post-processing thresholds for both
    models, optimizers = {}, {}
    for arch in ("paa", "fcos"):
        torch.manual_seed(0)
        models[arch] = build_model(replace(base, arch=arch), num_classes, inference=test)
        optimizers[arch] = torch.optim.SGD(models[arch].parameters(), lr=1e-4, momentum=0.9)
        instrument(models[arch], arch)
    instrument_paa_module()

    def train_step(arch: str) -> None:
        model, opt = models[arch], optimizers[arch]
        model.train()
        losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    def inference(arch: str, score_thresh: float) -> None:
        model = models[arch].eval()
        if arch == "paa":
            model.inference.score_thresh = score_thresh  # read at every call
        else:
            model.score_thresh = score_thresh
        with torch.no_grad():
            model(images)

    cases = {
        "train step": train_step,
        f"inference, score_thresh {test.score_thresh}": lambda arch: inference(arch, test.score_thresh),
        "inference, score_thresh 0 (all candidates)": lambda arch: inference(arch, 0.0),
    }
    results = {}
    for case, step in cases.items():
        totals: dict[str, list[float]] = {"paa": [], "fcos": []}
        parts: dict[str, list[float]] = defaultdict(list)
        for r in range(args.warmup + args.rounds):
            for arch in (("paa", "fcos") if r % 2 == 0 else ("fcos", "paa")):  # interleaved A B, B A, ...
                TIMERS.clear()
                start = time.perf_counter()
                step(arch)
                elapsed = time.perf_counter() - start
                if r >= args.warmup:
                    totals[arch].append(elapsed)
                    for name, seconds in TIMERS.items():
                        parts[name].append(seconds / elapsed)
                        parts[name + "_ms"].append(seconds)
        ratio = statistics.median(a / b for a, b in zip(totals["paa"], totals["fcos"]))
        results[case] = (median_ms(totals["paa"]), median_ms(totals["fcos"]), ratio, parts)
        print(f"  measured {case}", flush=True)

    print(f"\n{args.backbone}, width {args.width}, {args.num_convs} convs/tower, {args.size}x{args.size} px, batch "
          f"{args.batch}, {sum(len(t['boxes']) for t in targets)} objects, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds (+{args.warmup} warm-up), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| measurement | ours: PAA + IoU pred. (ms) | torchvision FCOS (ms) | ours / FCOS | target |")
    print("|---|---:|---:|---:|---:|")
    targets_text = {"train step": "≤ 1.15×"}
    for case, (ours, fcos, ratio, _) in results.items():
        print(f"| {case} | {ours:.1f} | {fcos:.1f} | **{ratio:.2f}×** | {targets_text.get(case, '≤ 1.10×')} |")
    print("\n| share (median over rounds) | ours | FCOS |")
    print("|---|---:|---:|")
    train_parts = results["train step"][3]
    print(f"| training step: assignment (PAA, Procedure 1) | {share(train_parts, 'paa_assign')} | — |")
    print(f"| training step: loss (Eq. 8) | {share(train_parts, 'paa_loss')} | — |")
    print(f"| training step: FCOS matching + loss (`compute_loss`) | — | {share(train_parts, 'fcos_match_and_loss')} |")
    for case in list(results)[1:]:
        parts = results[case][3]
        print(f"| {case}: post-processing | {share(parts, 'paa_postprocess')} | {share(parts, 'fcos_postprocess')} |")
        print(f"| {case}: score voting (Eq. 9–10) | {share(parts, 'paa_voting')} | — |")

    if args.profile:
        for case in ("train step", "inference, score_thresh 0 (all candidates)"):
            for arch in ("paa", "fcos"):
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for _ in range(3):
                        cases[case](arch)
                print(f"\n### profile: {case}, {arch} (3 calls)\n")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def share(parts: dict[str, list[float]], name: str) -> str:
    if name not in parts:
        return "—"
    return f"{100 * statistics.median(parts[name]):.1f} % ({1000 * statistics.median(parts[name + '_ms']):.1f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size-divisible", type=int, default=32,
                        help="padding of both models' batches (torchvision FCOS's own default: 32)")
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
