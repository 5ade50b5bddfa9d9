"""Issue 9: what PAA's assignment does on a trained model, under each GMM setting and matcher, plus the figures.

    python benchmarks/analysis_figures.py --runs runs/ablations/medium --out benchmarks/results [--images 64]

Reads the ``analysis`` grid (``python -m paa_toolkit.ablate --table analysis --budget medium --seeds 3``):

1. ``analysis_training.png``: positives per GT and GTs without a positive (all / small) over training, per
   config of the table (mean over seeds, band min–max), from each run's ``metrics.jsonl``.
2. The trained PAA (reference) checkpoint of seed 0, its assignment of the first ``--images`` training
   images at the test size (``inspect_assignment``: no flip, no multi-scale draw), replayed
   (:func:`paa_toolkit.assign.replay.replay_assignment`, exact: the recorded per-class logits) under
   the paper's EM (init min / max, σ = 1, tol 1e-3), a converged EM (tol 1e-8, 10 000 iterations),
   the data-initialised EM and with gt matching. Prints per setting: median EM iterations, the
   distance of the two means as a fraction of the GT's cost range, collapsed fits, GTs whose positive
   set differs from the converged fit's, GTs without a positive (all / small); writes them to
   ``analysis_assignment.json`` and draws ``analysis_em_iterations.png`` (histogram) and
   ``analysis_gmm_one_gt.png`` (one GT's costs under the paper's and the data initialisation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from paa_toolkit.ablation.grid import TABLES
from paa_toolkit.assign.replay import replay_assignment
from paa_toolkit.assign.stats import size_class, summarize_diagnostics
from paa_toolkit.data.build import build_datasets
from paa_toolkit.engine.checkpoint import build_from_checkpoint, resolve_checkpoint
from paa_toolkit.engine.config import TrainConfig
from paa_toolkit.engine.run_files import read_metrics, trace_image_indices
from paa_toolkit.viz.analysis import plot_diagnostics_by_config, plot_em_iterations, plot_gmm_settings

SETTINGS = {  # name → replay changes
    "paper EM (tol 1e-3)": {},
    "converged EM (tol 1e-8)": {"gmm_tol": 1e-8, "gmm_max_iter": 10_000},
    "data-init EM": {"gmm_init": "data"},
    "gt matching": {"low_quality": "gt"},
}


def training_curves(runs: Path, out: Path) -> Path:
    spec = TABLES["analysis"]
    curves = {}
    for row in spec.rows:
        seeds = sorted(path.parent for path in (runs / row.config).glob("seed*/final_metrics.json"))  # finished runs
        if seeds:
            curves[" ".join(row.cells)] = [read_metrics(path) for path in seeds]
    path = out / "analysis_training.png"
    plot_diagnostics_by_config(curves).savefig(path, dpi=100)
    return path


def positive_sets(diag) -> list[frozenset]:
    return [
        frozenset(diag.candidate_anchor[g][(diag.candidate_label[g] == 1) & diag.candidate_valid[g]].tolist())
        for g in range(diag.candidate_anchor.shape[0])
    ]


def assignment_facts(run_dir: Path, num_images: int, out: Path) -> dict:
    _, state = resolve_checkpoint(run_dir)
    cfg = TrainConfig.from_dict(state["config"])
    train_ds, _ = build_datasets(cfg.data)
    train_ds.train = False  # no flips: the trace images of the trainer
    model = build_from_checkpoint(state, cfg)
    indices = trace_image_indices(train_ds, num_images)
    samples = [train_ds[i] for i in indices]
    snapshot = model.inspect_assignment(
        [img for img, _ in samples], [{k: t[k] for k in ("boxes", "labels")} for _, t in samples]
    )
    diags = {name: replay_assignment(snapshot, **changes).assignment.diagnostics for name, changes in SETTINGS.items()}
    converged = positive_sets(diags["converged EM (tol 1e-8)"])
    facts = {"checkpoint": str(run_dir), "iteration": int(state["iteration"]), "images": len(indices), "settings": {}}
    for name, d in diags.items():
        summary = summarize_diagnostics(d)
        fitted = d.num_candidates > 1
        spread = d.candidate_cost.masked_fill(~d.candidate_valid, -torch.inf).amax(1) - d.candidate_cost.masked_fill(
            ~d.candidate_valid, torch.inf
        ).amin(1)
        gap = ((d.gmm_means[:, 1] - d.gmm_means[:, 0]).abs() / spread)[fitted & (spread > 0)]
        same_rows = name != "gt matching"  # gt matching changes the candidates: compare only the GMM settings
        differs = [a != b for a, b in zip(positive_sets(d), converged)] if same_rows else []
        facts["settings"][name] = {
            "gts": int(d.num_candidates.numel()),
            "gts_small": int((size_class(d.gt_area) == 0).sum()),
            "em_iterations_median": float(d.em_iterations[d.num_candidates > 0].double().median()),
            "means_gap_over_cost_range_median": float(gap.median()) if gap.numel() else None,
            "collapsed_frac": summary["collapsed_frac"],
            "positive_set_differs_from_converged": (sum(differs) / len(differs)) if differs else None,
            "no_positive_frac": summary["no_positive_frac"],
            "no_positive_frac_small": summary["no_positive_frac_small"],
            "positives_per_gt": summary["positives_per_gt"],
            "cost_range_median": float(spread[fitted & (spread > 0)].median()),
        }
    paper, data = diags["paper EM (tol 1e-3)"], diags["data-init EM"]
    plot_em_iterations(
        {
            "paper init, tol 1e-3 (the default)": paper.em_iterations[paper.num_candidates > 0],
            "data init, tol 1e-3": data.em_iterations[data.num_candidates > 0],
            "paper init, tol 1e-8": diags["converged EM (tol 1e-8)"].em_iterations[paper.num_candidates > 0],
        },
    ).savefig(out / "analysis_em_iterations.png", dpi=100)
    # one typical GT: most candidates among those whose positive sets differ under the two inits and whose
    # paper fit stopped at or before the median number of EM iterations
    differs = torch.tensor([a != b for a, b in zip(positive_sets(paper), positive_sets(data))])
    typical = differs & (paper.em_iterations <= paper.em_iterations[paper.num_candidates > 0].median())
    pool = typical if typical.any() else differs if differs.any() else torch.ones_like(differs)
    row = int(torch.where(pool, paper.num_candidates, -1).argmax())
    results = {}
    for name, d in (("paper init (min / max, σ = 1), tol 1e-3", paper), ("data init (halves at the median)", data)):
        keep = d.candidate_valid[row]
        fit = {"means": d.gmm_means[row], "variances": d.gmm_variances[row], "weights": d.gmm_weights[row]}
        results[f"{name}: {int(d.em_iterations[row])} EM it."] = (
            fit,
            d.candidate_label[row][keep],
            float(d.boundary[row]),
        )
    area = float(paper.gt_area[row])
    plot_gmm_settings(
        paper.candidate_cost[row][paper.candidate_valid[row]],
        results,
        title=f"One GT ({area**0.5:.0f} px, {int(paper.num_candidates[row])} candidates), "
        f"iteration {facts['iteration']}: Fig. 3 (c) under both GMM initialisations",
    ).savefig(out / "analysis_gmm_one_gt.png", dpi=100)
    facts["one_gt"] = {
        "row": row,
        "sqrt_area_px": area**0.5,
        "candidates": int(paper.num_candidates[row]),
        "positives": {"paper": int(paper.num_positives[row]), "data": int(data.num_positives[row])},
    }
    facts["positive_set_differs_paper_vs_data"] = float(differs.double().mean())
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the grid's <out>/<budget> folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--images", type=int, default=64, help="training images to assign (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's reference checkpoint")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("wrote", training_curves(args.runs, args.out))
    facts = assignment_facts(args.runs / "paa_ioupred" / f"seed{args.seed}", args.images, args.out)
    (args.out / "analysis_assignment.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(f"checkpoint {facts['checkpoint']} (iteration {facts['iteration']}), {facts['images']} training images")
    keys = list(next(iter(facts["settings"].values())))
    print("| setting | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for name, values in facts["settings"].items():
        cells = ["–" if v is None else f"{v:.3g}" for v in values.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"positive sets differ, paper vs data init: {facts['positive_set_differs_paper_vs_data']:.3f}; "
        f"one GT: {facts['one_gt']}"
    )


if __name__ == "__main__":
    main()
