"""Benchmark: batched FitGMM + SeparateAnchors (Procedure 1, lines 12–13) vs the reference style.

The reference code fits one ``sklearn.mixture.GaussianMixture`` per ground truth in a Python loop and
separates with Fig. 3 (c). Ours fits every GT at once (:func:`paa_toolkit.assign.fit_gmm`) and
separates with :func:`paa_toolkit.assign.boundaries.separate`. Same inputs for both:
:func:`~paa_toolkit.assign.gmm.synthetic_candidate_costs` (5 levels × K = 9 candidates per GT, sorted
ascending, some GTs with fewer candidates), as in ``bench_gmm.py``.

    python benchmarks/bench_assign.py [--sizes 20 320 2000] [--repeats 5]

Prints a Markdown table: milliseconds per call, speed-up and agreement of the positive sets.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from bench_gmm import best_ms  # this folder: run as `python benchmarks/bench_assign.py`

from paa_toolkit.assign.boundaries import separate
from paa_toolkit.assign.gmm import fit_gmm, fit_gmm_sklearn, synthetic_candidate_costs


def reference_positives(costs: torch.Tensor, valid: torch.Tensor) -> list[set[int]]:
    """The reference implementation's loop: one scikit-learn GMM per GT, Fig. 3 (c)."""
    result = []
    for row, mask in zip(costs.numpy(), valid.numpy()):
        values = row[mask]
        if len(values) < 2:
            result.append({0})
            continue
        fit = fit_gmm_sklearn(values)
        labels = fit.labels[0].numpy()
        density = fit.log_density[0].numpy()
        fg = labels == 0
        if fg.any():
            peak = int(np.flatnonzero(fg & (density == density[fg].max())).min())
            result.append(set(range(peak + 1)))
        else:
            result.append(set(range(len(values))))
    return result


def batched_positives(costs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return separate("c", costs, valid, fit_gmm(costs, valid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 320, 2000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}\n"
    )
    print("| GTs | sklearn loop (ms) | batched (ms) | speed-up | identical positive sets | identical labels |")
    print("|---:|---:|---:|---:|---:|---:|")
    for g in args.sizes:
        costs, valid = synthetic_candidate_costs(g, seed=g)
        ref = reference_positives(costs, valid)
        ours = batched_positives(costs, valid)
        same_sets = sum(set(ours[i].nonzero().flatten().tolist()) == ref[i] for i in range(g))
        ref_labels = torch.zeros_like(ours)
        for i, pos in enumerate(ref):
            ref_labels[i, sorted(pos)] = 1
        same_labels = ((ref_labels == ours) | ~valid).sum().item() - (~valid).sum().item()
        t_ref = best_ms(lambda: reference_positives(costs, valid), max(1, args.repeats // 2))
        t_ours = best_ms(lambda: batched_positives(costs, valid), args.repeats)
        print(
            f"| {g} | {t_ref:.1f} | {t_ours:.2f} | {t_ref / t_ours:.0f}× | "
            f"{100 * same_sets / g:.2f} % | {100 * same_labels / valid.sum().item():.3f} % |"
        )


if __name__ == "__main__":
    main()
