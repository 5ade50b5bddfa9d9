"""``python -m paa_toolkit.course`` (``make course``): train the course detector once, or find it cached."""

from __future__ import annotations

import argparse
import json
import math
import time

from ..engine.checkpoint import FINAL_METRICS
from ..engine.run_files import TRACE_DIR, load_trace
from .fit_statistics import BIMODAL_D, MIN_CANDIDATES_TO_JUDGE, traced_gts
from .run_cache import briefly_trained_run, course_config, course_run_dir, is_complete


def main(argv: list[str] | None = None) -> int:
    """``python -m paa_toolkit.course`` (``make course``): train the course detector, or find it cached;
    print where it is, how long it took, its AP and how bimodal its GTs' candidate costs are."""
    parser = argparse.ArgumentParser(prog="python -m paa_toolkit.course", description=main.__doc__)
    parser.add_argument("--fast", action="store_true", help="the PAA_FAST=1 setting instead of the student one")
    parser.add_argument("--cache-dir", help="cache folder (default: $PAA_TOOLKIT_CACHE or ~/.cache/paa_toolkit)")
    args = parser.parse_args(argv)
    cfg = course_config(args.fast)
    run_dir = course_run_dir(cfg, args.cache_dir)
    cached = is_complete(run_dir)
    print(f"course detector ({'fast' if args.fast else 'student'} setting): {run_dir}")
    start = time.perf_counter()
    briefly_trained_run(args.fast, cache_dir=args.cache_dir, progress=True)
    took = time.perf_counter() - start
    final = json.loads((run_dir / FINAL_METRICS).read_text())
    print(
        "found in the cache, nothing trained"
        if cached
        else f"trained in {took / 60:.1f} min ({cfg.solver.max_iters} iterations, then the final evaluation)"
    )
    print(
        f"AP {final['AP']:.3f}, AP50 {final['AP50']:.3f}, AP75 {final['AP75']:.3f} on {cfg.data.synthetic_num_val} "
        f"validation images; IoU-prediction error on true positives {final.get('iou_error_tp', math.nan):.3f}"
    )
    traces = sorted((run_dir / TRACE_DIR).glob("iter_*.pt"))
    if traces:
        snapshot = load_trace(traces[-1])["snapshot"]  # the safe reader: nothing in the file is unpickled
        s = traced_gts(snapshot).summary()
        print(
            f"last trace: {s['gts']} GTs, {s['judged']} with >= {MIN_CANDIDATES_TO_JUDGE} candidates, of which "
            f"{100 * s['bimodal']:.0f} % have clearly bimodal costs (BIC, Ashman's D > {BIMODAL_D:g}) and "
            f"{100 * s['differs']:.0f} % an EM fit that stopped early (median {s['em_iterations']:.0f} vs "
            f"{s['converged_iterations']:.0f} iterations)"
        )
    print("open the notebooks: jupyter lab notebooks/")
    return 0


__all__ = ["main"]
