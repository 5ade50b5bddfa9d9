"""Notebook 04 in a real JupyterLab and a real browser: Run All, then use the assignment explorer.

Needs Chromium (/usr/bin/chromium) and the Python package playwright (both installed by .ci/run); when
either is missing this test FAILS, so CI cannot pass without it. ``PAA_SKIP_BROWSER=1`` skips it for a
local run. Screenshots go to test-artifacts/ (git-ignored). Slow: ``pytest -m slow tests/test_browser.py``.
"""
from __future__ import annotations

import io
import os

import pytest

from browser_lab import (
    REPO, BrowserUnavailable, JupyterLab, cell_output, check_browser, chromium_page, copy_into, error_outputs,
    label_text, open_notebook, run_all, wait_idle, wait_until, widget_by_description,
)

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "04_assignment_evolution.ipynb"
ARTIFACTS = REPO / "test-artifacts"
POSITIVES = r"^positives: \d+$"


def expected_readout(run_dir: str, rule: str) -> str:
    """What the explorer must show at start (last iteration, image 0, its first GT) for ``rule``, computed
    here, outside the browser, with the library's own replay."""
    from paa_toolkit.widgets.compute import open_source, replay_assignment

    source = open_source(run_dir)
    snapshot = source.snapshot(source.iterations[-1])
    gt = int(snapshot.gt_valid[0].nonzero()[0, 0])
    matched = replay_assignment(snapshot, rule).assignment.matched_gt
    return f"positives: {int((matched[0] == gt).sum())}"


def changed_pixels(png_a: bytes, png_b: bytes) -> float:
    """Fraction of pixels that differ between two screenshots (1.0 when their sizes differ)."""
    from PIL import Image, ImageChops

    a, b = (Image.open(io.BytesIO(p)).convert("RGB") for p in (png_a, png_b))
    if a.size != b.size:
        return 1.0
    diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 16 else 0)
    return diff.histogram()[255] / (a.size[0] * a.size[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.environ.get("PAA_SKIP_BROWSER") == "1":
        pytest.skip("PAA_SKIP_BROWSER=1")
    try:
        check_browser()
    except BrowserUnavailable as err:
        pytest.fail(str(err))  # CI must not pass silently without the browser test
    root = tmp_path_factory.mktemp("lab-root")
    copy_into(root, NOTEBOOK)  # a copy: nothing the browser does touches the committed notebook
    with JupyterLab(root, env={"PAA_FAST": "1"}) as server:
        yield server


def test_notebook_04_runs_in_jupyterlab_and_the_explorer_redraws_when_the_rule_changes(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        try:
            open_notebook(page, lab, NOTEBOOK.name)
            run_all(page, lab, timeout=600)
            page.screenshot(path=ARTIFACTS / "browser_04_after_run_all.png", full_page=True)

            assert error_outputs(page) == []
            printed = page.locator(".jp-OutputArea-output", has_text="traced iterations:").first.inner_text()
            run_dir = printed.splitlines()[0].strip()  # the notebook prints its run folder first
            explorer = cell_output(page, ".widget-image")
            explorer.scroll_into_view_if_needed()
            assert label_text(page, POSITIVES) == expected_readout(run_dir, "c")
            before_src = [img.get_attribute("src") for img in explorer.locator("img").all()]
            before = explorer.screenshot(path=ARTIFACTS / "browser_04_explorer_before.png")

            # rule (c) → FNP: a fixed 10 lowest-cost candidates instead of the GMM's low-cost component
            expected = expected_readout(run_dir, "fnp")
            widget_by_description(page, "dropdown", "rule").locator("select").select_option(label="FNP (fixed number)")
            wait_until(lambda: [i.get_attribute("src") for i in explorer.locator("img").all()] != before_src, 60,
                       "the explorer's images to be redrawn")
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
