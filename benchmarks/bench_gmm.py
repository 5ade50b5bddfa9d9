"""Benchmark: FitGMM (Procedure 1, line 12), batched EM vs the reference's per-GT scikit-learn loop.

The reference fits one ``sklearn.mixture.GaussianMixture`` per ground truth and reads its labels
(``predict``) and densities (``score_samples``); :func:`paa_toolkit.assign.gmm.fit_gmm` fits every GT
at once. Inputs: PAA-like candidate costs, 5 levels × K = 9 = 45 slots per GT, sorted, padded
(:func:`~paa_toolkit.assign.gmm.synthetic_candidate_costs`).

    python benchmarks/bench_gmm.py [--sizes 20 320 2000] [--repeats 5] [--device cpu] [--dtype float64] [--threads 1]

Prints a Markdown table: milliseconds per call (best of ``repeats``), speed-up, label agreement.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from paa_toolkit.assign.gmm import fit_gmm, synthetic_candidate_costs


def sklearn_loop(costs: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
    """The reference: one GaussianMixture per GT (fit, predict, score_samples), as in the PAA code."""
    from sklearn.mixture import GaussianMixture

    labels = []
    for row, mask in zip(costs, valid):
        x = row[mask].reshape(-1, 1)
        if len(x) < 2:  # scikit-learn cannot fit 2 components; fit_gmm's definition: label 0
            labels.append(np.zeros(len(x), dtype=np.int64))
            continue
        gmm = GaussianMixture(
            2,
            weights_init=[0.5, 0.5],
            means_init=[[x.min()], [x.max()]],
            precisions_init=[[[1.0]], [[1.0]]],
            tol=1e-3,
            reg_covar=1e-6,
            max_iter=100,
        )
        gmm.fit(x)
        labels.append(gmm.predict(x))
        gmm.score_samples(x)
    return labels


def best_ms(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 320, 2000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning on the rare row that runs max_iter

    print(
        f"FitGMM benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}, {args.dtype}\n"
    )
    print("| GTs | sklearn loop (ms) | batched (ms) | speed-up | label agreement | max n_iter |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        costs, valid = synthetic_candidate_costs(size, seed=size)
        x, m = costs.to(device), valid.to(device)
        fit_gmm(x, m, dtype=dtype)  # warm-up
        ours_ms = best_ms(lambda: fit_gmm(x, m, dtype=dtype), args.repeats, sync)
        ref_labels = []
        ref_ms = best_ms(
            lambda: ref_labels.append(sklearn_loop(costs.numpy(), valid.numpy())),
            max(1, min(args.repeats, 3 if size <= 320 else 1)),
        )
        fit = fit_gmm(x, m, dtype=dtype)
        ours = fit.labels.cpu()[valid].numpy()
        agree = float((np.concatenate(ref_labels[-1]) == ours).mean())
        print(
            f"| {size} | {ref_ms:.1f} | {ours_ms:.2f} | {ref_ms / ours_ms:.0f}× | {100 * agree:.2f} % "
            f"| {int(fit.n_iter.max())} |"
        )


if __name__ == "__main__":
    main()
