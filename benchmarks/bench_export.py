"""ONNX export: file size, and ONNX Runtime against eager PyTorch on the CPU (same inputs).

    python benchmarks/bench_export.py                              # the default run's model, random init
    python benchmarks/bench_export.py --checkpoint runs/demo       # a trained run, its own settings

Exports with :func:`paa_toolkit.model.onnx_export.export_onnx`, then runs ``--images`` validation images of
the default synthetic set as they are (256 × 256) and cropped to 2/3 of their width (a second input
size) through both, ``--threads`` threads each; prints a Markdown table per input (detections,
largest box and score differences, median time of ``--repeats`` runs after a warm-up).
Random init: ``test.score_thresh 0`` so that NMS and score voting have 1,000s of candidates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paa_toolkit.data.build import build_datasets  # noqa: E402
from paa_toolkit.engine.checkpoint import build_from_checkpoint, resolve_checkpoint  # noqa: E402
from paa_toolkit.engine.config import TrainConfig  # noqa: E402
from paa_toolkit.export import check_inputs, compare  # noqa: E402
from paa_toolkit.model.detector import build_model  # noqa: E402
from paa_toolkit.model.onnx_export import export_onnx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run folder or .pth (default: the default model at random init)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        _, state = resolve_checkpoint(args.checkpoint)
        cfg = TrainConfig.from_dict(state["config"])
        model = build_from_checkpoint(state, cfg)
    else:
        cfg = TrainConfig()
        cfg.test.score_thresh = 0.0
        torch.manual_seed(0)
        model = build_model(cfg.model, 6, cfg.assign, cfg.test).eval()
    _, val = build_datasets(cfg.data)
    images = check_inputs([val[i][0] for i in range(args.images)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        size = path.stat().st_size / 2**20
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rows = compare(model, session, images, args.repeats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{args.checkpoint or 'random init'}: {params:.2f} M parameters, ONNX file {size:.1f} MiB, "
        f"{args.threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}\n"
    )
    print("| input | detections (eager / ORT) | max box diff (px) | max score diff | eager ms | ORT ms | ORT / eager |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['height']}×{r['width']} | {int(r['expected'])} / {int(r['actual'])} | {r['max_box_diff']:.1e} | "
            f"{r['max_score_diff']:.1e} | {r['eager_ms']:.0f} | {r['onnx_ms']:.0f} | "
            f"{r['onnx_ms'] / r['eager_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
