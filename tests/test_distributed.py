"""Specification of multi-process training: ``torchrun`` with 2 CPU processes (Gloo), 1 image each,
trains the same weights as one process with a batch of 2 — and both processes hold identical weights.

Why they can be equal: each image's loss is normalised by the positive count averaged over the
processes (``paa_toolkit.distributed.mean_over_processes``), DDP averages the gradients, the norms
are GroupNorm (per image), the resize is fixed (``--model.min_size 64``), and the batch of every
iteration and each image's flip are functions of its place in the data stream, not of the process.
The images are random textures: on the synthetic images (flat backgrounds) a 1-image and a 2-image
forward pass already drift apart by ~0.1 % in the gradients from the third step on *in one process*
(a batch-size-dependent last bit decides between exactly tied values), which would hide what this
test is about; with textures both runs agree to float precision (gradients ~1e-6).

This file is also the worker: ``torchrun … tests/test_distributed.py --worker OUT TRAIN-ARGS…``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TIMEOUT_S = 240


def write_texture_dataset(folder: Path, num_images: int = 8, size: int = 64) -> tuple[Path, Path]:
    """Random-texture images with 1–3 boxes each (3 classes), as a COCO folder: ``(image dir, annotations)``."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, size - 24, 2)
            w, h = rng.uniform(8, 24, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                }
            )
    ann_file = folder / "annotations.json"
    ann_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": c, "name": f"class {c}"} for c in (1, 2, 3)],
            }
        )
    )
    return folder / "images", ann_file


def tiny_args(image_dir: Path, ann_file: Path, run_dir: Path, batch_size: int) -> list[str]:
    return [
        "--dataset",
        "coco",
        "--data.image_dir",
        str(image_dir),
        "--data.train_ann",
        str(ann_file),
        "--data.val_ann",
        str(ann_file),
        "--batch-size",
        str(batch_size),
        "--model.width",
        "32",
        "--model.num_convs",
        "1",
        "--model.min_size",
        "64",
        "--model.max_size",
        "128",
        "--max-iters",
        "4",
        "--solver.warmup_iters",
        "2",
        "--lr",
        "0.05",
        "--output-dir",
        str(run_dir),
        "--device",
        "cpu",
        "--log_every",
        "1",
        "--checkpoint_every",
        "2",
        "--eval_batch_size",
        "2",
        "--trace_images",
        "1",
        "--trace_iters",
        "0,4",
        "--test.score_thresh",
        "0",
    ]


def record_models(built: list):
    """A model builder that keeps what it built (and in which process group) in ``built``."""

    def build(cfg, num_classes):
        import torch.distributed as dist

        from paa_toolkit.engine.checkpoint import default_model_builder

        model = default_model_builder(cfg, num_classes)
        group = (dist.get_world_size(), dist.get_backend()) if dist.is_initialized() else (1, None)
        built.append((model, group))
        return model

    return build


def worker(out_dir: str, argv: list[str]) -> None:
    """One torchrun process: train through the CLI's parser, then save this process's weights."""
    import torch.distributed as dist

    from paa_toolkit.cli import parse_args
    from paa_toolkit.engine.loop import train

    torch.set_num_threads(1)
    built: list = []
    result = train(parse_args(argv), build_model=record_models(built), progress=False)
    ((model, (world, backend)),) = built
    torch.save(
        {
            "weights": model.state_dict(),
            "metrics": result.metrics,
            "world_size": world,
            "backend": backend,
            "group_left": not dist.is_initialized(),
        },
        Path(out_dir) / f"rank{os.environ['RANK']}.pt",
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(sys.argv[2], sys.argv[3:])
    sys.exit(0)


# ---- the test ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):  # one thread, as the torchrun workers (OMP_NUM_THREADS=1)
    """The same 4 iterations twice: torchrun 2 processes × batch 1, and one process × batch 2."""
    from paa_toolkit.cli import parse_args
    from paa_toolkit.engine.loop import train

    tmp = tmp_path_factory.mktemp("ddp")
    data = write_texture_dataset(tmp / "data")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        "--worker",
        str(tmp),
        *tiny_args(*data, tmp / "ddp_run", batch_size=1),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    built: list = []
    single = train(
        parse_args(tiny_args(*data, tmp / "single_run", batch_size=2)), build_model=record_models(built), progress=False
    )
    return {"ranks": ranks, "ddp_dir": tmp / "ddp_run", "single": single, "single_model": built[0][0], "data": data}


def _max_change(before: dict, after: dict) -> float:
    return max((after[k].float() - v.float()).abs().max().item() for k, v in before.items() if v.is_floating_point())


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_weights_as_one_process_with_the_global_batch(runs):
    rank0, rank1 = runs["ranks"]
    assert (rank0["world_size"], rank0["backend"]) == (2, "gloo")
    assert rank0["group_left"] and rank1["group_left"]  # the process group is destroyed at exit
    single = runs["single_model"].state_dict()
    assert rank0["weights"].keys() == single.keys()
    for key, value in single.items():
        assert torch.equal(rank0["weights"][key], rank1["weights"][key]), f"ranks differ at {key}"
        torch.testing.assert_close(rank0["weights"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the last two steps alone move the weights far beyond that tolerance: the comparison has teeth
    from paa_toolkit.engine.checkpoint import PREVIOUS, load_checkpoint

    assert _max_change(load_checkpoint(runs["ddp_dir"] / PREVIOUS)["model"], single) > 1e-3


@pytest.mark.slow
def test_ddp_checkpoint_is_written_once_and_loads_in_a_single_process(runs):
    from paa_toolkit.engine.checkpoint import LAST, build_from_checkpoint, load_checkpoint
    from paa_toolkit.engine.run_files import read_metrics

    state = load_checkpoint(runs["ddp_dir"] / LAST)
    assert not any(key.startswith("module.") for key in state["model"])
    model = build_from_checkpoint(state)  # strict load into a bare model
    for key, value in model.state_dict().items():
        assert torch.equal(value, runs["ranks"][0]["weights"][key]), key
    records = [(r["kind"], r["iteration"]) for r in read_metrics(runs["ddp_dir"])]
    assert len(records) == len(set(records))  # rank 1 wrote nothing
    assert records == [(r["kind"], r["iteration"]) for r in read_metrics(runs["single"].run_dir)]


@pytest.mark.slow
def test_ddp_evaluation_gathers_every_rank_and_matches_a_single_process_evaluation(runs):
    from paa_toolkit.data.coco import CocoDetection
    from paa_toolkit.engine.checkpoint import LAST, build_from_checkpoint, load_checkpoint
    from paa_toolkit.engine.metrics import evaluate_coco, predict

    state = load_checkpoint(runs["ddp_dir"] / LAST)
    model = build_from_checkpoint(state)
    val = CocoDetection(*runs["data"], category_ids=state["category_ids"])
    _, detections, _ = predict(model, val, batch_size=2)
    per_image = [len(d["boxes"]) for d in detections]
    assert min(per_image) > 0  # so a missing shard (every 2nd image) would show in the count
    alone = evaluate_coco(model, val, batch_size=2)
    final = json.loads((runs["ddp_dir"] / "final_metrics.json").read_text())
    assert final["num_detections"] == alone["num_detections"] == sum(per_image)
    for name in ("AP", "AP50", "AR100", "iou_error"):
        assert final[name] == pytest.approx(alone[name], rel=1e-6, abs=1e-9), name
    same = [json.dumps(r["metrics"], sort_keys=True) for r in runs["ranks"]]  # (NaN-safe equality)
    assert same[0] == same[1]  # every process returns the gathered metrics
