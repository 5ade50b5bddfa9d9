"""``python -m paa_toolkit.ablate --table 1L|1R|4|baselines|analysis|successors``: the paper's ablations, in miniature.

Each table is a grid of trainings, each a normal ``python -m paa_toolkit.train`` run in its own
folder ``<out>/<budget>/<config>/seed<k>/`` (one process each: a diverging FSR run is a result,
not a crash), skipped when complete, resumed when not, locked while running. When the grid is done
(or with ``--report``) the table is written as ``<out>/<budget>/table_<T>.md`` (the paper's layout,
mean ± std over seeds), ``.json`` and a ``.png`` bar chart of AP::

    python -m paa_toolkit.ablate --table 1R --seeds 2                 # small budget, this CPU
    python -m paa_toolkit.ablate --table 1L --list                    # config names, one per line
    python -m paa_toolkit.ablate --table 1L --only fsr_0.1 fsr_0.2    # one share of the grid
    python -m paa_toolkit.ablate --table analysis --budget medium --seeds 3 --jobs 2   # 2 trainings at once
    python -m paa_toolkit.ablate --table successors --budget medium --seeds 5         # PAA vs TAL, SimOTA (issue 20)
    python -m paa_toolkit.ablate --table 1L --budget bench-pretrained --seeds 5 \\
        --carry benchmarks/results/table_1L_bench-pretrained.json \\
        --results benchmarks/results/table_1L_bench-pretrained.json   # one more seed on a clean checkout
    python -m paa_toolkit.ablate --table 1R --budget bench-pretrained-4x --seeds 6 --report \\
        --adopt paa_ioupred:3=runs/paa_9600_s3      # a finished `train` run as that (config, seed): not trained again
    python -m paa_toolkit.ablate --table 1R --budget paper --set data.root=/data/coco \\
        --set model.backbone_weights=/weights/resnet50.pth --launcher "torchrun --nproc_per_node 8 -m paa_toolkit.train"

Tables (rows → config overrides on top of the reference model: PAA, IoU prediction, Fig. 3 (c),
K = 9, anchor scale 8, no score voting):

* ``1L`` Table 1 left: boundaries Fig. 3 (a)–(d); FNP (5/10/20); FSR (> 0.1/0.2/0.3).
* ``1R`` Table 1 right: IoU assignment (``max_iou``) without / with IoU prediction; PAA without
  aux head, with centerness, with IoU prediction, + score voting (inference only: re-evaluates the
  "PAA + IoU pred." checkpoint); ATSS with centerness / IoU prediction.
* ``4``  Table 4: K ∈ {5, 9, 18, 25}; default anchor scale ∈ {4, 6, 8, 10}.
* ``baselines``: our PAA (with / without voting) vs torchvision FCOS and RetinaNet built on the
  same backbone, trained by the same loop on the same data and budget.
* ``analysis`` (issue 9): PAA (reference) vs its two remedies — gt matching (``assign.low_quality
  gt``), data-initialised EM (``assign.gmm_init data``) and both — and ATSS, torchvision FCOS; all
  with IoU prediction where it applies. Meant for ``--budget medium --seeds 3``.

Budgets (``--budget``):

* ``small`` (default) — this 2-core CPU: the embedded synthetic dataset at 128 px (400 train /
  100 val images), ResNet-18 from scratch, FPN/head width 32, batch 4, 240 iterations (warm-up 20),
  no assignment traces. Measured on the shared 2-core CPU with ``OMP_NUM_THREADS=1``: 62–185 s per
  training (median 72 s); Table 1 right with 2 seeds 32.5 min, all four tables 51 min
  (benchmarks/ablations.md). The numbers are far below the paper's (AP ≈ 0.01–0.07 after 240
  iterations): compare rows, not absolute values, and mind the seed-to-seed spread.
* ``medium`` — the default run's data and model (256 px, 800 / 100 images, width 64) for 400
  iterations, two threads per training: 3.2 min each on 2 idle cores (Table 1 right, 1 seed, in 25
  min), AP 0.08–0.24 where ``small`` has barely started (benchmarks/ablations.md).
* ``bench`` — the quiet miniature (issue 19): 128 px images (800 train / 500 val), a P2–P6 pyramid so that
  the paper's anchors (8 × stride) meet the objects (8–64 px), width 32, 2,400 iterations (warm-up 100, the
  paper's decays at 2/3 and 8/9), bf16 backbone where the CPU has it natively, AP evaluated every 300
  iterations (the learning curve); from random weights, not converged. ``bench-2x`` trains the same recipe
  twice as long: the convergence check. Measurements: benchmarks/README.md, "The bench recipe".
* ``bench-pretrained`` (and its check ``bench-pretrained-2x``) — ``bench`` from a ResNet body pre-trained once on
  detection of another generator seed's images (``model.backbone_pretrain detection``, cached; the miniature
  of the paper's ImageNet start). ``bench-pretrained-4x`` (9,600 iterations, about 20 min per training on 2
  threads) is the length where it converges: twice that (``bench-pretrained-8x``, its check) gives −0.6 AP points
  (PAA, 3 seeds; ATSS −0.1, FCOS +0.2, 3 seeds each).
  ``bench-pretrained-atss`` starts from the body that ATSS pre-trained
  (``detection-atss``): the check that the PAA-pre-trained body does not favour PAA.
* ``paper`` — §4 / Appendix A.1 on COCO: ResNet-50 (frozen BN; pass ImageNet weights with
  ``--set model.backbone_weights=FILE``), width 256, 800 px, 135k iterations, batch 2 per process
  (× 8 GPUs = 16, with the torchrun launcher), AMP, CUDA.
* ``tiny`` — a smoke test (CI, notebooks): seconds per run; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor

from .ablation.adopt import adopt, parse_adoption
from .ablation.carried import CarriedSeeds, is_carried, read_carried, still_to_run
from .ablation.grid import TABLES, build_plan, parse_assignment
from .ablation.report import write_report, write_results
from .ablation.runner import execute, run_state, settings_differences
from .engine import presets
from .engine.config import ConfigError

DEFAULT_OUT = "runs/ablations"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paa_toolkit.ablate",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
        allow_abbrev=False,
    )
    parser.add_argument("--table", required=True, nargs="+", choices=sorted(TABLES), help="which table(s)")
    parser.add_argument(
        "--budget",
        default="small",
        choices=sorted(presets.BUDGETS),
        help="default: small (this CPU); the budgets are paa_toolkit.engine.presets",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per config (default 1)")
    parser.add_argument("--only", nargs="+", metavar="CONFIG", help="run only these configs (see --list)")
    parser.add_argument(
        "--train-seeds",
        nargs="+",
        type=int,
        metavar="K",
        help="train only these of the seeds 0..N-1 (the report still shows all N): e.g. a new seed block for a few "
        "rows, paired within itself",
    )
    parser.add_argument("--list", action="store_true", help="print the table's config names and exit")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every run, e.g. data.root=/data/coco (repeatable)",
    )
    parser.add_argument("--launcher", help="training command (default: this python -m paa_toolkit.train)")
    parser.add_argument("--retry-failed", action="store_true", help="re-run configs whose training failed")
    parser.add_argument("--report", action="store_true", help="only write the tables from finished runs")
    parser.add_argument(
        "--results",
        metavar="FILE",
        help="also write the table's results (per seed, means, paired differences, date, machine) "
        "as a small JSON file, e.g. benchmarks/results/analysis.json (needs a single --table)",
    )
    parser.add_argument(
        "--carry",
        metavar="FILE",
        help="a committed results file of the same table, budget and --set (an earlier --results): its finished "
        "seeds are not trained again and the report takes them from it where no run folder has them — a grid "
        "goes on from a clean checkout, whose run folders are gone",
    )
    parser.add_argument(
        "--adopt",
        action="append",
        default=[],
        metavar="CONFIG:SEED=RUN",
        help="take a finished `paa_toolkit.train` run folder as that (config, seed) of the grid instead of training "
        "it: it must have learned with the planned settings (test.* aside: it is re-evaluated with the plan's); "
        "repeatable, needs a single --table (paa_toolkit.ablation.adopt)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings at once (default 1; each its own process and folder). With N > 1 and "
        "no OMP_NUM_THREADS set, each training gets cpu_count // N threads",
    )
    return parser


def _listed_state(run, carried: CarriedSeeds | None = None) -> str:
    """A run's folder state for ``--list``; a complete run trained with other settings names them."""
    if carried is not None and is_carried(run, carried):
        return "carried"
    state = run_state(run.run_dir)
    differ = settings_differences(run) if state == "complete" else {}
    return f"{state} (other settings: {', '.join(differ)})" if differ else state


def adopt_into(table: str, text: str, args: argparse.Namespace, extra: dict) -> None:
    """``--adopt CONFIG:SEED=RUN``: make a finished training that (config, seed) of the table's grid."""
    config, seed, source = parse_adoption(text)
    full = build_plan(table, args.budget, args.seeds, args.out, None, extra)
    run = next((r for r in full if r.config.name == config and r.seed == seed), None)
    if run is None:
        raise ConfigError(f"--adopt {text}: table {table} with --seeds {args.seeds} plans no {config} at seed {seed}")
    metrics = adopt(run, source)
    print(f"[ablate] {run.name}: adopted {source} (AP {metrics['AP']:.3f} with the plan's test settings)")


def run_grid(plan: list, launcher: list[str] | None, retry_failed: bool, jobs: int = 1) -> list:
    """Every run of ``plan`` once, ``jobs`` at a time; re-evaluations after the trainings they read."""
    unique = list({run.run_dir: run for run in plan}.values())
    trainings = sorted(
        (run for run in unique if run.base_dir is None), key=lambda run: run.seed
    )  # seed 0 of every row first
    evaluations = [run for run in unique if run.base_dir is not None]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait: each run is a subprocess
        outcomes = list(pool.map(lambda run: execute(run, launcher, retry_failed), trainings))
    return outcomes + [execute(run, launcher, retry_failed) for run in evaluations]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        extra = dict(parse_assignment(a) for a in args.set)
        if args.budget == "paper" and not extra.get("model.backbone_weights") and not args.list:
            raise ConfigError(
                "--budget paper trains ResNet-50 with frozen BN from ImageNet weights (§4.1): pass "
                "--set model.backbone_weights=FILE (a local torchvision checkpoint; nothing is downloaded)"
            )
        plans = {
            t: build_plan(t, args.budget, args.seeds, args.out, args.only if len(args.table) == 1 else None, extra)
            for t in args.table
        }
        if (args.only or args.results or args.carry or args.adopt) and len(args.table) > 1:
            parser.error("--only, --results, --carry and --adopt need a single --table")
        carried = read_carried(args.carry, args.table[0], args.budget, extra) if args.carry else None
        if args.train_seeds is not None:
            outside = sorted(set(args.train_seeds) - set(range(args.seeds)))
            if outside:
                raise ConfigError(
                    f"--train-seeds {' '.join(map(str, outside))}: not among the seeds 0..{args.seeds - 1}"
                )
            plans = {t: [run for run in plan if run.seed in args.train_seeds] for t, plan in plans.items()}
    except ConfigError as e:
        parser.error(str(e))
    if args.list:
        for table, plan in plans.items():
            for name in dict.fromkeys(p.config.name for p in plan):
                states = ", ".join(_listed_state(p, carried) for p in plan if p.config.name == name)
                print(f"{name}\t{states}" if len(args.table) == 1 else f"{table}\t{name}\t{states}")
        return 0
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        for text in args.adopt:
            adopt_into(args.table[0], text, args, extra)
    except ConfigError as e:
        parser.error(str(e))
    if args.jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # inherited by every training process
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    launcher = shlex.split(args.launcher) if args.launcher else None
    for table, plan in plans.items():
        if not args.report:
            run_grid(still_to_run(plan, carried) if carried else plan, launcher, args.retry_failed, args.jobs)
        paths = write_report(table, args.out, args.budget, args.seeds, extra, carried)
        print(paths["md"].read_text())
        print(f"[ablate] wrote {paths['md']}, {paths['json'].name}, {paths['png'].name}")
        if args.results:
            command = shlex.join(["python", "-m", "paa_toolkit.ablate", *(sys.argv[1:] if argv is None else argv)])
            written = write_results(args.results, table, args.out, args.budget, args.seeds, extra, command, carried)
            print(f"[ablate] wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
