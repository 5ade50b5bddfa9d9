"""Screenshots of the three explorers as a student sees them: JupyterLab in headless Chromium.

    .venv/bin/python tests/make_screenshots.py          # PAA_FAST=1 run (seconds; trains ~1 min if not cached)
    .venv/bin/python tests/make_screenshots.py --full   # the full course run (trains 5–15 min the first time)

Writes docs/assignment_explorer.png (notebook 04 after Run All, on a GT whose training EM stopped early:
the converged fit dotted), docs/gmm_explorer.png (notebook 02's narrow costs after three EM steps: the
early stop beside the converged fit) and docs/voting_explorer.png (the course detector's detections and
candidates on notebook 05's image), each a palette PNG under 300 KB. It drives the browser exactly as
tests/test_browser.py does, with the same helpers (browser_lab.py, next to this script: Python puts a
script's own folder on the import path); needs /usr/bin/chromium and the playwright package (see
.ci/run). The GMM and voting explorers come from a small notebook written into the temporary folder the
server serves.
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
import time
from pathlib import Path

import nbformat
from PIL import Image, ImageChops

from browser_lab import (  # tests/browser_lab.py
    REPO,
    JupyterLab,
    cell_output,
    chromium_page,
    collapse_left_sidebar,
    copy_into,
    error_outputs,
    label_text,
    open_notebook,
    run_all,
    wait_idle,
    wait_until,
    widget_by_description,
)

DOCS = REPO / "docs"
NOTEBOOK_04 = REPO / "notebooks" / "04_assignment_evolution.ipynb"
MAX_BYTES = 300_000

#: the small notebook that shows the GMM and the voting explorers (the voting one on the course detector)
EXPLORERS_CELLS = [
    """\
%matplotlib inline
import os
from paa_toolkit.course import (briefly_trained_run, detections_from_view, head_outputs, load_run, post_processing,
                                run_datasets)
from paa_toolkit.widgets import gmm_explorer, voting_explorer
FAST = os.environ.get("PAA_FAST") == "1"
""",
    # notebook 02, section 4: narrow costs, the paper's sigma = 1 start stops after 3 EM iterations
    "gmm_explorer(fg_mean=0.9, fg_std=0.05, fg_count=15, bg_mean=1.6, bg_std=0.05, bg_count=20)",
    """\
# notebook 05's image (the validation image with the most GTs) through the course detector: its detections
# after NMS that score at least where precision over the validation set reaches 90 % (notebook 05's rule), and
# the candidates before NMS (NMS at IoU 1.0 keeps them all) that vote in §3.3
from paa_toolkit.engine import operating_point
model, state = load_run(briefly_trained_run(FAST))
_, val = run_datasets(state)
samples = [val[i] for i in range(len(val))]
views = [head_outputs(model, im) for im, _ in samples]
all_dets = [detections_from_view(model, v) for v in views]
show, _ = operating_point(all_dets, [t for _, t in samples], precision=0.9)
index = max(range(len(samples)), key=lambda i: len(samples[i][1]["boxes"]))
view = views[index]
with post_processing(model, score_voting=False):
    detections = detections_from_view(model, view)
keep = detections["scores"] >= show
detections = {k: v[keep][:15] for k, v in detections.items()}
with post_processing(model, score_voting=False, nms_thresh=1.0, detections_per_img=1000):
    candidates = detections_from_view(model, view)
voting_explorer(detections, candidates, view.image)""",
]


def write_explorers_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(src) for src in EXPLORERS_CELLS],
        metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
    )
    nbformat.write(nb, path)


def save_small_png(png: bytes, path: Path) -> int:
    """Save a screenshot, cropped to its content, as an optimised PNG (256 colours if that is needed to stay
    small); its size in bytes."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    box = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
    if box:
        margin = 6
        image = image.crop(
            (
                max(box[0] - margin, 0),
                max(box[1] - margin, 0),
                min(box[2] + margin, image.width),
                min(box[3] + margin, image.height),
            )
        )
    image.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{path}: {size} bytes, more than {MAX_BYTES}")
    return size


def shown_gt(run_dir: str) -> tuple[int, int]:
    """(image, GT) of the last snapshot as notebook 01 picks its early-stop example: clearly bimodal costs
    (>= 10 candidates) whose training EM fit is visibly not converged, the most candidates (ties: Ashman's D);
    without one, the GT with the most candidates."""
    from paa_toolkit.course import traced_gts
    from paa_toolkit.widgets.compute import open_source

    source = open_source(run_dir)
    traced = traced_gts(source.snapshot(source.iterations[-1]))
    wanted = traced.judged & traced.fits.bimodal & traced.fits.differs
    pool = wanted if wanted.any() else traced.num_candidates > 0
    score = (traced.num_candidates.double() * 1000 + traced.fits.d.nan_to_num(0.0)).masked_fill(~pool, -1e9)
    row = int(score.argmax())
    return int(traced.image[row]), int(traced.gt[row])


def show_gt(page, lab, image: int, gt: int) -> None:
    """Choose ``image`` and ``gt`` in the assignment explorer's dropdowns."""
    widget_by_description(page, "dropdown", "image").locator("select").select_option(value=str(image))
    wait_idle(page, lab)
    select = widget_by_description(page, "dropdown", "GT").locator("select")
    value = next(v for v in select.evaluate("s => Array.from(s.options, o => o.value)") if v.startswith(f"{gt} ("))
    select.select_option(value=value)
    wait_idle(page, lab)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--full", action="store_true", help="use the full course run instead of PAA_FAST=1")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the PNGs (default: docs/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {} if args.full else {"PAA_FAST": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paa-screens-") as tmp:
        root = Path(tmp)
        copy_into(root, NOTEBOOK_04)
        write_explorers_notebook(root / "explorers.ipynb")
        with JupyterLab(root, env=env) as lab, chromium_page(width=1500, height=1900) as page:
            shots = {}
            open_notebook(page, lab, NOTEBOOK_04.name)
            collapse_left_sidebar(page)
            run_all(page, lab, timeout=900)
            if error_outputs(page):
                raise RuntimeError(f"notebook 04 failed in the browser:\n{error_outputs(page)[0]}")
            printed = page.locator(".jp-OutputArea-output", has_text="traced iterations:").first.inner_text()
            show_gt(page, lab, *shown_gt(printed.splitlines()[0].strip()))  # the notebook prints its run folder
            shots["assignment_explorer.png"] = cell_output(page, ".widget-image").screenshot()

            open_notebook(page, lab, "explorers.ipynb")
            collapse_left_sidebar(page)
            run_all(page, lab)
            if error_outputs(page):
                raise RuntimeError(f"the explorers notebook failed in the browser:\n{error_outputs(page)[0]}")
            for _ in range(3):  # three EM iterations: where tol 1e-3 stops on these costs
                before = label_text(page, r"^iteration: \d+")
                page.locator("button", has_text=re.compile(r"^\s*EM step$")).click()
                wait_until(lambda: label_text(page, r"^iteration: \d+") != before, 30, "an EM step")
            wait_idle(page, lab)
            gmm = page.locator("button", has_text=re.compile(r"^\s*EM step$"))
            shots["gmm_explorer.png"] = cell_output(page, gmm).screenshot()
            sigma = page.locator("label.widget-label", has_text="σ_t")
            shots["voting_explorer.png"] = cell_output(page, sigma).screenshot()
    for name, png in shots.items():
        size = save_small_png(png, args.out / name)
        print(f"{args.out / name}: {size / 1000:.0f} kB")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
