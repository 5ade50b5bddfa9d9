"""Benchmark: the bench recipe's CPU speed levers and its evaluation noise (issue 19).

    python benchmarks/bench_recipe.py speed [--steps 30] [--threads 2]      # ms per training step, per lever
    python benchmarks/bench_recipe.py bootstrap RUN_DIR [RUN_DIR ...]       # AP ± bootstrap s.e. over val images
    python benchmarks/bench_recipe.py candidates                            # what the anchors offer each GT
    python benchmarks/bench_recipe.py curves RUNS --configs paa_ioupred atss_ioupred fcos --out benchmarks/results
    python benchmarks/bench_recipe.py schedule RUN_DIR [RUN_DIR ...] --out benchmarks/results   # lr × length scan
    python benchmarks/bench_recipe.py convergence RUN_DIR ... --carry results/bench_pretrained_length_scan.json

``curves`` reads a grid's run folders (``RUNS/bench/<config>/seed<k>/metrics.jsonl`` and, when present,
``RUNS/bench-2x/...`` and ``RUNS/bench-4x/...``), draws AP / AP50 / APs against iterations
(``bench_curves.png``: mean over seeds, band min–max) and writes ``bench_curves.json``: per config and seed the
curve and the final AP at N, 2N and 4N; the convergence figures — mean AP(2N) − AP(N) over the seeds that have
both (converged: ≤ 0.5 points), AP(4N) − AP(2N) (the next doubling) and the gain over the last 600 iterations
of the N run; the seed mean and sample std of AP(N), over all seeds and over the independent ones (a
``bench-pretrained`` run with the detection pre-training's own seed, 0, starts its FPN and head from the
weights the body was pre-trained with: ``shares_pretraining_start``).

``schedule`` compares finished runs of one config that differ in their schedule (``solver.lr``, ``max_iters``,
``new_layers_lr_factor``, read from each run's ``config.yaml``): AP against iterations for each
(``bench_schedule.png``) and, per run, the lr, the batch, the length, the curve and the final AP
(``bench_schedule.json``); the figure's x axis is the number of training images seen, so that batch 16 lines up
with batch 4 — the lr scan and the length scan (N, 2N, 4N, …) behind the recipe's schedule. Runs that differ only
in length give ``doublings``: the AP each doubling adds, per seed and mean over seeds (the convergence check).

``convergence`` is the length scan of every detector (issue 19: PAA, ATSS, FCOS): finished runs of one recipe
at lengths N, 2N, ... (``config.yaml`` names the detector, seed and length), with the rows of earlier results
(``--carry``: runs of another session need not be on disk). It writes, per run, the final AP and the curve;
per detector the AP each doubling adds (per seed and mean) and the seed spread at the recipe's length
(``--length``); PAA minus each other detector at that length, paired by seed, with its verdict (the baselines'
order on the converged recipe); and the figure (``viz.plot_length_scan``).

``candidates`` measures, for the validation GTs of the synthetic set at each image size and pyramid, the IoU
of each GT's best anchor on every level (anchors 8 × stride, the paper's scale): how many levels offer
the GT an anchor of IoU ≥ 0.3 (Procedure 1 takes its top K = 9 on every level; the paper's COCO objects
meet such anchors on one or two levels) and which share of GTs has none anywhere.

``speed`` times forward + loss (PAA assignment) + backward + SGD step of the ``bench`` budget's detector
on its own synthetic training batches (batch 4, 128 px, P2–P6, width 32), after 3 warm-up steps, for each
lever: float32, bf16 autocast of the backbone (``solver.bf16 on``), channels-last, both, and
``torch.compile`` of the backbone (its compile time reported apart). The levers are measured alternately,
round after round, and each figure is the median over rounds: a shared CPU slows all of them alike.

``bootstrap`` re-predicts the validation split with a run's checkpoint and reports the AP of the run with
the standard error from 200 bootstrap resamples of the validation images
(:func:`paa_toolkit.engine.metrics.bootstrap_coco_ap`): the part of a run's AP noise that comes from which
images are in the validation set, as opposed to the training seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from paa_toolkit.ablation.report import EQUIVALENCE_MARGIN, machine_description, seeds_needed, verdict
from paa_toolkit.assign.config import GMM_RULES
from paa_toolkit.data.build import build_datasets
from paa_toolkit.data.coco import collate
from paa_toolkit.engine import presets
from paa_toolkit.engine.checkpoint import build_from_checkpoint, default_model_builder, resolve_checkpoint
from paa_toolkit.engine.config import TrainConfig
from paa_toolkit.engine.metrics import bootstrap_coco_ap, predict
from paa_toolkit.engine.precision import apply_speed_levers, cpu_has_native_bf16
from paa_toolkit.engine.pretrain import shares_pretraining_start
from paa_toolkit.engine.run_files import read_metrics
from paa_toolkit.viz.analysis import plot_learning_curves, plot_length_scan

LEVERS = {
    "float32": {},
    "bf16": {"bf16": "on"},
    "channels_last": {"channels_last": True},
    "bf16 + channels_last": {"bf16": "on", "channels_last": True},
    "compile": {"compile": True},
    # bench-pretrained trains layer2-4 of its body (stem + res2 frozen, §4.1); frozen: FPN and head only
    "bf16, body res3-res5 train": {"bf16": "on", "trainable": 3},
    "bf16, body frozen": {"bf16": "on", "trainable": 0},
}


def _step_timer(lever: dict, batches: list, num_classes: int):
    cfg = presets.bench_budget()
    cfg.model.backbone_trainable_layers = lever.get("trainable")
    torch.manual_seed(0)
    model = default_model_builder(cfg, num_classes)
    model.train()
    apply_speed_levers(model, lever.get("bf16", "off"), lever.get("channels_last", False), torch.device("cpu"))
    compile_s = 0.0
    if lever.get("compile"):
        model.backbone.forward = torch.compile(model.backbone.forward)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step(i: int) -> float:
        images, targets = batches[i % len(batches)]
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    start = time.perf_counter()
    step(0)
    if lever.get("compile"):
        compile_s = time.perf_counter() - start
    for i in range(1, 3):
        step(i)
    return step, compile_s


def speed(steps: int, rounds: int, levers: list[str] | None = None) -> dict:
    cfg = presets.bench_budget()
    train_ds, _ = build_datasets(cfg.data)
    batches = [collate([train_ds[4 * b + i] for i in range(4)]) for b in range(8)]
    chosen = {"float32": {}} | {name: LEVERS[name] for name in (levers or list(LEVERS))}
    timers = {name: _step_timer(lever, batches, train_ds.num_classes) for name, lever in chosen.items()}
    times = {name: [] for name in chosen}
    for _ in range(rounds):  # alternate: a shared CPU slows every lever alike
        for name, (step, _) in timers.items():
            times[name] += [step(i) for i in range(steps // rounds)]
    base = statistics.median(times["float32"])
    return {
        "machine": f"{machine_description()}; {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}",
        "torch": torch.__version__,
        "ms_per_step": {n: round(1000 * statistics.median(t), 1) for n, t in times.items()},
        "speedup_vs_float32": {n: round(base / statistics.median(t), 2) for n, t in times.items()},
        "compile_s": round(timers["compile"][1], 1) if "compile" in timers else None,
    }


def bootstrap(run_dir: Path, replicates: int) -> dict:
    _, state = resolve_checkpoint(run_dir)
    model = build_from_checkpoint(state)
    cfg = TrainConfig.from_dict(state["config"])
    _, val_ds = build_datasets(cfg.data)
    image_ids, detections, _ = predict(model, val_ds, batch_size=8)
    result = bootstrap_coco_ap(val_ds.coco, detections, image_ids, list(val_ds.category_ids), replicates)
    return {"run": str(run_dir), **result}


def candidates() -> dict:
    from torchvision.ops import box_iou

    from paa_toolkit.data.synthetic import make_synthetic_coco
    from paa_toolkit.model.backbone import PYRAMIDS
    from paa_toolkit.structures import make_anchor_grid

    out = {}
    for size, pyramid in ((256, "p3-p7"), (128, "p3-p7"), (128, "p2-p6")):
        root = make_synthetic_coco(seed=0, num_train=800, num_val=500 if size == 128 else 100, image_size=size)
        data = json.loads((root / "val.json").read_text())
        boxes = torch.tensor(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in data["annotations"]
                if not a["iscrowd"]
            ]
        )
        strides = [2**level for level in PYRAMIDS[pyramid]]
        grid = make_anchor_grid([(-(-size // s), -(-size // s)) for s in strides], strides, scale=8.0)
        best = torch.stack(
            [box_iou(boxes, level).max(1).values for level in grid.boxes.split(grid.num_per_level)], 1
        )  # [G, levels]
        levels = (best >= 0.3).sum(1)
        side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
        out[f"{size} px {pyramid}"] = {
            "gts": len(boxes),
            "median_best_iou": round(float(best.max(1).values.median()), 3),
            "levels_with_iou>=0.3": {str(n): round(float((levels == n).float().mean()), 3) for n in range(4)},
            "gts_without_anchor_iou>=0.3": round(float((levels == 0).float().mean()), 3),
            "without_by_side": {
                f"<{hi}px": round(float((levels[(side >= lo) & (side < hi)] == 0).float().mean()), 3)
                for lo, hi in ((0, 16), (16, 32), (32, 64), (64, 999))
            },
            "best_iou_per_level_median": [round(float(v), 3) for v in best.median(0).values],
        }
    return out


def _model_overrides(trained: dict, budget: str) -> dict:
    """The ``model`` fields a run trained with other than its budget's (the ablation rows' own overrides too)."""
    recipe = presets.budget(budget).to_dict()["model"]
    skip = ("backbone_weights", "backbone_pretrain", "arch", "aux")  # the pre-trained file's path; the rows' heads
    return {k: v for k, v in trained.items() if k not in skip and k in recipe and v != recipe[k]}


def _shares_pretraining_start(budget: str, seed: int) -> bool:
    """Whether ``seed`` of ``budget`` starts FPN and head where its detection pre-training did (not an independent
    seed: :func:`~paa_toolkit.engine.pretrain.shares_pretraining_start`)."""
    cfg = presets.budget(budget)
    cfg.seed = seed
    return shares_pretraining_start(cfg)


def _curve(records: list[dict]) -> list[tuple[int, float]]:
    return [(r["iteration"], r["AP"]) for r in records if r.get("kind") == "eval"]


def curves(runs: Path, configs: list[str], out: Path, stem: str = "bench_curves", budget: str = "bench") -> dict:
    summary, drawn = {}, {}
    for config in configs:
        seeds = sorted((runs / budget / config).glob("seed*/final_metrics.json"))
        entry = {"seeds": {}}
        for final in seeds:
            run, name = final.parent, final.parent.name
            records = read_metrics(run / "metrics.jsonl")
            curve = _curve(records)
            longer = {n: runs / f"{budget}-{n}x" / config / name / "final_metrics.json" for n in (2, 4)}
            trained = yaml.safe_load((run / "config.yaml").read_text())
            entry["seeds"][name] = {
                "solver_lr": trained["solver"]["lr"],  # how it was trained: the runs may override the budget's lr
                "model_overrides": _model_overrides(trained["model"], budget),  # e.g. a frozen body
                "curve": curve,
                "AP_N": json.loads(final.read_text())["AP"],
                **{f"AP_{n}N": json.loads(f.read_text())["AP"] if f.is_file() else None for n, f in longer.items()},
                "shares_pretraining_start": _shares_pretraining_start(budget, int(name.removeprefix("seed"))),
            }
            drawn.setdefault(config, []).append(records)
        finals = [s["AP_N"] for s in entry["seeds"].values()]
        pairs = [s["AP_2N"] - s["AP_N"] for s in entry["seeds"].values() if s["AP_2N"] is not None]
        pairs_4n = [s["AP_4N"] - s["AP_2N"] for s in entry["seeds"].values() if None not in (s["AP_2N"], s["AP_4N"])]
        gains = [
            s["curve"][-1][1] - dict(s["curve"]).get(s["curve"][-1][0] - 600, float("nan"))
            for s in entry["seeds"].values()
            if len(s["curve"]) > 2
        ]
        independent = [s["AP_N"] for s in entry["seeds"].values() if not s["shares_pretraining_start"]]
        entry.update(
            num_seeds=len(finals),
            AP_mean=statistics.fmean(finals) if finals else None,
            AP_std=statistics.stdev(finals) if len(finals) > 1 else None,
            num_independent_seeds=len(independent),  # without the seed that restarts the pre-training's FPN and head
            AP_std_independent=statistics.stdev(independent) if len(independent) > 1 else None,
            gain_2N_minus_N_points=100 * statistics.fmean(pairs) if pairs else None,
            seeds_with_2N=len(pairs),
            gain_4N_minus_2N_points=100 * statistics.fmean(pairs_4n) if pairs_4n else None,  # the next doubling
            seeds_with_4N=len(pairs_4n),
            gain_last_600_iters_points=100 * statistics.fmean(gains) if gains else None,
        )
        summary[config] = entry
    command = f"python benchmarks/bench_recipe.py curves {runs} --configs {' '.join(configs)} --stem {stem}"
    command += f" --budget {budget}"
    return _write(out / stem, plot_learning_curves(drawn), command, configs=summary)


def _write(stem: Path, fig, command: str, **body) -> dict:
    """``<stem>.png`` (the figure) and ``<stem>.json`` (date, machine, command and ``body``)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(stem.parent / f"{stem.name}.png", dpi=110)  # not with_suffix: a stem may hold a dot (lr0.04)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(), "command": command, **body}
    (stem.parent / f"{stem.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _setting(entry: dict) -> str:
    """A ``schedule`` row's or doubling's lr, batch and FPN + head factor, for the printout."""
    return f"solver.lr {entry['lr']:g}, batch {entry['batch_size']}, FPN + head lr × {entry['new_layers_lr_factor']:g}"


def _over_seeds(per_seed: dict[int, float]) -> dict:
    """A figure in points per seed, its mean and sample std (None with one seed)."""
    values = list(per_seed.values())
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"per_seed_points": per_seed, "mean_points": statistics.fmean(values), "std_points": std}


def doublings(rows: list[dict]) -> list[dict]:
    """AP gained by each doubling of the schedule, per seed and as a mean over seeds: runs that share detector,
    seed, lr, batch and FPN + head factor, and whose lengths are 2 × one another (the convergence check, issue 19:
    converged means AP(2N) − AP(N) ≤ 0.5 points)."""
    ap = {_identity(r): r["AP"] for r in rows}
    gains: dict[tuple, dict[int, float]] = {}  # (detector, lr, batch, factor, N) -> seed -> AP(2N) - AP(N), points
    for (detector, seed, lr, batch, factor, length), value in ap.items():
        twice = ap.get((detector, seed, lr, batch, factor, 2 * length))
        if twice is not None:
            gains.setdefault((detector, lr, batch, factor, length), {})[seed] = 100 * (twice - value)
    return [
        {"detector": detector, "lr": lr, "batch_size": batch, "new_layers_lr_factor": factor}
        | {"from_iters": n, "to_iters": 2 * n}
        | _over_seeds(per_seed)
        for (detector, lr, batch, factor, n), per_seed in sorted(gains.items())
    ]


def _detector(config: dict) -> str:
    """The detector a run's ``config.yaml`` trains: torchvision's FCOS / RetinaNet, else PAA's detector named by
    its assignment rule: PAA for the paper's rule (``c``, Fig. 3 (c)), PAA (a) for another boundary, ATSS, ..."""
    arch, rule = config["model"].get("arch", "paa"), config["assign"]["rule"]
    if arch != "paa":
        return arch.upper()
    if rule in GMM_RULES:
        return "PAA" if rule == "c" else f"PAA ({rule})"
    return rule.upper()


def _wall_s(run: Path) -> float | None:
    """A run's training time from its runner (``ablate.json``) or lane (``timing.json``) record; None when there is
    none, or when the lane resumed the run: its time is then only the part after the resume, not a training's."""
    timed = [run / name for name in ("ablate.json", "timing.json") if (run / name).is_file()]
    if not timed:
        return None
    record = json.loads(timed[0].read_text())
    return None if record.get("resumed") else record["wall_s"]


def _run_row(run: Path, config: dict) -> tuple[dict, list[dict]]:
    """A finished run's row (detector, seed, schedule, final AP, curve, wall time) and its metrics records."""
    solver = config["solver"]
    records = read_metrics(run / "metrics.jsonl")
    final = json.loads((run / "final_metrics.json").read_text())
    row = (
        {"run": str(run), "detector": _detector(config), "seed": config["seed"], "lr": solver["lr"]}
        | {"batch_size": config["data"]["batch_size"], "max_iters": solver["max_iters"]}
        | {"new_layers_lr_factor": solver.get("new_layers_lr_factor", 1.0)}  # runs before it existed: 1
        | {"AP": final["AP"], "APs": final["APs"], "APm": final["APm"], "curve": _curve(records)}
        | {"wall_s": _wall_s(run)}
    )
    return row, records


def schedule(runs: list[Path], out: Path, stem: str = "bench_schedule") -> dict:
    rows, drawn = [], {}
    configs = {run: yaml.safe_load((run / "config.yaml").read_text()) for run in runs}
    several_seeds = len({config["seed"] for config in configs.values()}) > 1
    for run, config in configs.items():
        row, records = _run_row(run, config)
        label = f"solver.lr {row['lr']:g}, batch {row['batch_size']}, {row['max_iters']} iterations"
        label += f", FPN + head lr × {row['new_layers_lr_factor']:g}" if row["new_layers_lr_factor"] != 1 else ""
        label += f", seed {row['seed']}" if several_seeds else ""
        rows.append(row)
        drawn[label] = [[{**r, "iteration": r["iteration"] * row["batch_size"]} for r in records]]  # x: images seen
    fig = plot_learning_curves(drawn)
    for ax in fig.axes:
        ax.set_xlabel("training images seen (iterations × batch)")
    command = f"python benchmarks/bench_recipe.py schedule {' '.join(map(str, runs))} --stem {stem}"
    return _write(out / stem, fig, command, runs=rows, doublings=doublings(rows))


def _identity(row: dict) -> tuple:
    """What makes two rows the same training: detector, seed and schedule."""
    return (row["detector"], row["seed"], row["lr"], row["batch_size"], row["new_layers_lr_factor"], row["max_iters"])


def at_length(rows: list[dict], length: int) -> dict[str, dict]:
    """Per detector, the final AP of its runs of ``length`` iterations: seeds, mean and sample std (points)."""
    finals: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["max_iters"] == length:
            finals.setdefault(row["detector"], {})[row["seed"]] = 100 * row["AP"]
    return {detector: _over_seeds(by_seed) for detector, by_seed in sorted(finals.items())}


def ordering(at_n: dict[str, dict], reference: str = "PAA") -> list[dict]:
    """The detectors' order at the recipe's length: ``reference`` minus each other detector, seed by seed over the
    seeds both have (same seed: same data order and body, so the shared noise cancels), with its verdict
    (:func:`~paa_toolkit.ablation.report.verdict`: *holds* = the reference ahead beyond 2 s.e. on every seed,
    *reversed*, *equivalent* within ±1 AP point, else *within noise*; one seed is *unresolved*) and the seeds a
    verdict would need at the spread measured so far (None once resolved, or with fewer than 2 shared seeds)."""
    if reference not in at_n:
        return []
    margin = 100 * EQUIVALENCE_MARGIN  # points, like the differences
    mine = at_n[reference]["per_seed_points"]
    compared = []
    for other, entry in at_n.items():
        if other == reference:
            continue
        shared = sorted(set(mine) & set(entry["per_seed_points"]), key=int)
        diffs = {seed: mine[seed] - entry["per_seed_points"][seed] for seed in shared}
        values = list(diffs.values())
        judged = verdict(values, margin=margin)
        needed = seeds_needed(values, margin=margin) if judged in ("within noise", "unresolved") else None
        compared.append(
            {"a": reference, "b": other, "margin_points": margin}
            | ({"per_seed_points": diffs, "mean_points": statistics.fmean(values)} if values else {})
            | {"verdict": judged, "seeds_needed": needed}
        )
    return compared


def convergence(runs: list[Path], carry: list[Path], out: Path, stem: str, length: int) -> dict:
    """The length scan of every detector: the rows of ``carry`` (earlier results of this command or of
    ``schedule``; rows without a detector are PAA's) and of the finished ``runs``, a run replacing a carried row
    of the same training; doublings per detector and seed, the seed spread at ``length``, and the figure.
    ``history`` keeps the date, machine and command of every earlier result; a carried row keeps its date."""
    rows: dict[tuple, dict] = {}
    history: list[dict] = []  # how the carried rows were measured: each earlier result's date, machine, command
    for file in carry:
        earlier = json.loads(file.read_text())
        history += earlier.get("history", []) + [{k: earlier[k] for k in ("date", "machine", "command")}]
        for row in earlier["runs"]:
            row = {"detector": "PAA", **row, "carried_from": row.get("carried_from", earlier["date"])}
            rows[_identity(row)] = row
    for run in runs:
        row, _ = _run_row(run, yaml.safe_load((run / "config.yaml").read_text()))
        rows[_identity(row)] = row
    ordered = sorted(rows.values(), key=lambda r: (r["detector"] != "PAA", r["detector"], r["max_iters"], r["seed"]))
    gains, at_n = doublings(ordered), at_length(ordered, length)
    fig = plot_length_scan(ordered, gains, recipe_length=length)
    command = " ".join(["python benchmarks/bench_recipe.py convergence", *map(str, runs)])
    command += "".join(f" --carry {file}" for file in carry) + f" --length {length} --stem {stem}"
    return _write(
        out / stem,
        fig,
        command,
        recipe_length=length,
        runs=ordered,
        doublings=gains,
        at_recipe_length=at_n,
        ordering_at_recipe_length=ordering(at_n),
        history=[h for h in {json.dumps(h, sort_keys=True): h for h in history}.values() if h["command"] != command],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS), help="default: all")
    b = sub.add_parser("bootstrap")
    b.add_argument("runs", nargs="+", type=Path)
    b.add_argument("--replicates", type=int, default=200)
    sub.add_parser("candidates")
    c = sub.add_parser("curves")
    c.add_argument("runs", type=Path)
    c.add_argument("--configs", nargs="+", default=["paa_ioupred", "atss_ioupred", "fcos"])
    c.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    c.add_argument("--stem", default="bench_curves", help="file names of the figure and JSON (default bench_curves)")
    c.add_argument(
        "--budget", default="bench", help="RUNS/<budget>/ and its checks RUNS/<budget>-2x/, -4x/ (default bench)"
    )
    r = sub.add_parser("schedule")
    r.add_argument("runs", nargs="+", type=Path)
    r.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    r.add_argument(
        "--stem", default="bench_schedule", help="file names of the figure and JSON (default bench_schedule)"
    )
    v = sub.add_parser("convergence")
    v.add_argument("runs", nargs="*", type=Path)
    v.add_argument("--carry", nargs="*", type=Path, default=[], help="earlier results (JSON) to keep")
    v.add_argument(
        "--length", type=int, default=9600, help="the recipe's length N (default 9,600: bench-pretrained-4x)"
    )
    v.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    v.add_argument("--stem", default="bench_pretrained_length_scan")
    args = parser.parse_args()
    if args.what == "speed":
        torch.set_num_threads(args.threads)
        print(json.dumps(speed(args.steps, args.rounds, args.levers), indent=1))
    elif args.what == "curves":
        for config, entry in curves(args.runs, args.configs, args.out, args.stem, args.budget)["configs"].items():
            print(config, {k: v for k, v in entry.items() if k != "seeds"})
    elif args.what == "schedule":
        result = schedule(args.runs, args.out, args.stem)
        for row in result["runs"]:
            print(f"{_setting(row)}, {row['max_iters']} iterations, seed {row['seed']}: AP {row['AP']:.4f}")
        for d in result["doublings"]:
            gain = f"{d['from_iters']} → {d['to_iters']}: {d['mean_points']:+.2f} points"
            print(f"{_setting(d)}, {gain}", d["per_seed_points"])
    elif args.what == "convergence":
        result = convergence(args.runs, args.carry, args.out, args.stem, args.length)
        for d in result["doublings"]:
            print(
                f"{d['detector']}, {d['from_iters']} → {d['to_iters']}: {d['mean_points']:+.2f}", d["per_seed_points"]
            )
        for detector, entry in result["at_recipe_length"].items():
            spread = f" ± {entry['std_points']:.2f}" if entry["std_points"] is not None else " (one seed)"
            print(f"{detector} at {args.length}: AP {entry['mean_points']:.2f}{spread}", entry["per_seed_points"])
        for o in result["ordering_at_recipe_length"]:
            gap = f"{o['mean_points']:+.2f} points" if "mean_points" in o else "no shared seed"
            needed = f" (about {o['seeds_needed']} seeds for a verdict)" if o["seeds_needed"] else ""
            print(f"{o['a']} − {o['b']} at {args.length}: {gap}, {o['verdict']}{needed}")
    elif args.what == "candidates":
        print(json.dumps(candidates(), indent=1))
    else:
        for run in args.runs:
            print(json.dumps(bootstrap(run, args.replicates)))


if __name__ == "__main__":
    main()
