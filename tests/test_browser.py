"""Notebook 04 in a real JupyterLab and a real browser, in the student setting: Run All, check what the
Fig. 4 (a) figure shows and what the assignment explorer shows, then use the explorer.

Needs Chromium (/usr/bin/chromium) and the Python package playwright (both installed by .ci/run); when
either is missing this test FAILS, so CI cannot pass without it. ``PAA_SKIP_BROWSER=1`` skips it for a
local run. The course detector comes from the session's ``course_cache`` (conftest: trained once, shared
with the notebook tests). Screenshots go to test-artifacts/ (git-ignored). Slow: ``pytest -m slow
tests/test_browser.py``.
"""

from __future__ import annotations

import base64
import io
import os
import re

import numpy as np
import pytest

from browser_lab import (
    REPO,
    BrowserUnavailable,
    JupyterLab,
    cell_output,
    check_browser,
    chromium_page,
    copy_into,
    error_outputs,
    label_text,
    open_notebook,
    run_all,
    wait_idle,
    wait_until,
    widget_by_description,
)

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "04_assignment_evolution.ipynb"
ARTIFACTS = REPO / "test-artifacts"
POSITIVES = r"^positives: \d+$"
#: the line notebook 04 prints above Fig. 4 (a): "image 10, GT 1: mean IoU of its positives' ... {0: 0.309, ...}"
CHOSEN_GT = re.compile(r"image (\d+), GT (\d+): mean IoU of its positives' predicted boxes per iteration: (\{.*\})")


def expected_readout(run_dir: str, image: int, gt: int, rule: str) -> str:
    """What the explorer must show for (image, gt) at the last iteration under ``rule``, computed here,
    outside the browser, with the library's own replay."""
    from paa_toolkit.widgets.compute import open_source, replay_assignment

    source = open_source(run_dir)
    matched = replay_assignment(source.snapshot(source.iterations[-1]), rule).assignment.matched_gt
    return f"positives: {int((matched[image] == gt).sum())}"


def positive_box_iou(run_dir: str, image: int, gt: int, iteration: int) -> float:
    """Mean IoU of the GT's positives' predicted boxes with it in the trace of ``iteration`` (outside the browser)."""
    from paa_toolkit.structures import batched_box_iou
    from paa_toolkit.widgets.compute import open_source

    snap = open_source(run_dir).snapshot(iteration)
    ious = batched_box_iou(snap.pred_boxes, snap.gt_boxes)[image][:, gt]
    return float(ious[snap.matched_gt[image] == gt].mean())


def changed_pixels(png_a: bytes, png_b: bytes) -> float:
    """Fraction of pixels that differ between two screenshots (1.0 when their sizes differ)."""
    from PIL import Image, ImageChops

    a, b = (Image.open(io.BytesIO(p)).convert("RGB") for p in (png_a, png_b))
    if a.size != b.size:
        return 1.0
    diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 16 else 0)
    return diff.histogram()[255] / (a.size[0] * a.size[1])


def colour_fraction(png: bytes, rgb: tuple[int, int, int], tolerance: int = 40) -> float:
    """Fraction of the pixels within ``tolerance`` of ``rgb`` (e.g. matplotlib's tab:green)."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float((np.abs(pixels - np.array(rgb)).max(-1) <= tolerance).mean())


@pytest.fixture(scope="module")
def lab(tmp_path_factory, course_cache):
    if os.environ.get("PAA_SKIP_BROWSER") == "1":
        pytest.skip("PAA_SKIP_BROWSER=1")
    try:
        check_browser()
    except BrowserUnavailable as err:
        pytest.fail(str(err))  # CI must not pass silently without the browser test
    root = tmp_path_factory.mktemp("lab-root")
    copy_into(root, NOTEBOOK)  # a copy: nothing the browser does touches the committed notebook
    with JupyterLab(root, env={"PAA_FAST": "0", "PAA_TOOLKIT_CACHE": str(course_cache)}) as server:
        yield server


def test_notebook_04_shows_fig_4a_and_the_explorer_the_library_computes_and_redraws_when_the_rule_changes(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        try:
            open_notebook(page, lab, NOTEBOOK.name)
            run_all(page, lab, timeout=900)
            page.screenshot(path=ARTIFACTS / "browser_04_after_run_all.png", full_page=True)
            assert error_outputs(page) == []
            printed = page.locator(".jp-OutputArea-output", has_text="traced iterations:").first.inner_text()
            run_dir = printed.splitlines()[0].strip()  # the notebook prints its run folder first
            iterations = [int(v) for v in re.search(r"traced iterations: \[(.*)\]", printed).group(1).split(",")]

            # Fig. 4 (a): the GT the notebook chose, its numbers as the library computes them, the figure drawn
            chosen = page.locator(".jp-OutputArea-output", has_text="mean IoU of its positives").first.inner_text()
            image, gt, per_iteration = CHOSEN_GT.search(chosen).groups()
            image, gt = int(image), int(gt)
            shown = {int(k): float(v) for k, v in re.findall(r"(\d+): ([\d.]+)", per_iteration)}
            for it in (iterations[0], iterations[-1]):
                assert shown[it] == pytest.approx(positive_box_iou(run_dir, image, gt, it), abs=1e-3)
            assert shown[iterations[-1]] > shown[iterations[0]] + 0.3  # the positives localise better
            # the figure: the first plain output image four panels wide (not a widget's)
            fig4a = next(
                img
                for img in page.locator(".jp-OutputArea-output > img").all()
                if img.evaluate("i => i.naturalWidth") > 1200
            )
            png = base64.b64decode(fig4a.get_attribute("src").split(",", 1)[1])
            (ARTIFACTS / "browser_04_fig4a.png").write_bytes(png)
            assert colour_fraction(png, (44, 160, 44)) > 0.002  # positives (tab:green dots, dashed predicted boxes)
            assert colour_fraction(png, (255, 215, 0)) > 0.001  # the GT (gold)

            # the explorer starts on that GT and shows what the library's replay computes
            explorer = cell_output(page, ".widget-image")
            explorer.scroll_into_view_if_needed()
            assert label_text(page, POSITIVES) == expected_readout(run_dir, image, gt, "c")
            assert label_text(page, r"EM \d+ iterations")  # the status gives the EM iteration counts
            before_src = [img.get_attribute("src") for img in explorer.locator("img").all()]
            before = explorer.screenshot(path=ARTIFACTS / "browser_04_explorer_before.png")

            # rule (c) → FNP: a fixed 10 lowest-cost candidates instead of the GMM's low-cost component
            expected = expected_readout(run_dir, image, gt, "fnp")
            widget_by_description(page, "dropdown", "rule").locator("select").select_option(label="FNP (fixed number)")
            wait_until(
                lambda: [i.get_attribute("src") for i in explorer.locator("img").all()] != before_src,
                60,
                "the explorer's images to be redrawn",
            )
            try:
                wait_until(lambda: label_text(page, POSITIVES) == expected, 30, f"the readout {expected!r}")
            except TimeoutError:
                assert label_text(page, POSITIVES) == expected
            wait_idle(page, lab)
            after = explorer.screenshot(path=ARTIFACTS / "browser_04_explorer_after.png")

            assert changed_pixels(before, after) > 0.01
            assert not label_text(page, r"^error:"), "the explorer reported an error"
            assert error_outputs(page) == []
        except Exception:
            page.screenshot(path=ARTIFACTS / "browser_04_failure.png", full_page=True)
            print("jupyter lab log:\n" + lab.log_tail())
            raise
