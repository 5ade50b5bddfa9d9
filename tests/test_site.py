"""The site of ``make docs`` (``docs/build_site.py``), built strictly and opened in a real browser.

The build renders the notebooks that ``tests/test_notebooks.py`` executed in this session (written to
``build/course/<setting>/``); a notebook it finds there from other sources it executes against the session's
course detector (:func:`course_cache`) — the detector is never trained twice. Strict: a broken link or
anchor, a missing API object or a notebook error fails the build.

Then ``python -m http.server -d site`` serves it on 127.0.0.1 and headless Chromium (Playwright, Debian's
/usr/bin/chromium as in tests/test_browser.py) checks what a reader sees: notebook 01's Fig. 1 decoded, the
formulas typeset by the vendored MathJax, the search finding ``fit_gmm``, the API page of ``fit_gmm`` with its
signature and its Returns — and that no request leaves localhost.

The browser tests are slow (``pytest -m slow tests/test_site.py``), the checks of the build's pieces fast;
``PAA_FAST=1`` builds from the fast setting (a quick local check), ``PAA_SKIP_BROWSER=1`` skips it.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

from browser_lab import REPO, BrowserUnavailable, check_browser, chromium_page, free_port, wait_until

ARTIFACTS = REPO / "test-artifacts"


# ---- the build's pieces (fast) ---------------------------------------------------------------------------
FRONT_DOORS = ["assign", "model", "engine", "data", "structures", "viz", "widgets", "course", "ablation"]


def notebook(cells):
    import nbformat

    return nbformat.v4.new_notebook(cells=cells)


def test_the_site_form_keeps_answers_empty_checks_silent_and_widgets_out(site_builder):
    import nbformat

    v4 = nbformat.v4
    committed = notebook(
        [
            v4.new_code_cell("x = 1"),
            v4.new_code_cell("answer = ...", metadata={"tags": ["exercise"]}),
            v4.new_code_cell('check("Exercise 1", answer, 3, hint="h")', metadata={"tags": ["check"]}),
            v4.new_code_cell("explorer"),
        ]
    )
    executed = copy.deepcopy(committed)
    executed.cells[1].source = "answer = 3"  # the injected solution
    for i, cell in enumerate(executed.cells):
        cell.execution_count = i + 1
        cell.outputs = [v4.new_output("stream", name="stdout", text=f"out {i}\n")]
    executed.cells[3].outputs = [
        v4.new_output(
            "display_data", data={"text/plain": "VBox()", "application/vnd.jupyter.widget-view+json": {"model_id": "m"}}
        )
    ]
    executed.metadata["widgets"] = {"state": {}}
    page = site_builder.for_the_site(executed, committed, site_builder.NOTEBOOKS[0], "fast")
    assert page.cells[0].outputs == executed.cells[0].outputs
    assert page.cells[1].source == "answer = ..." and page.cells[1].outputs == []
    assert page.cells[2].outputs == []
    assert list(page.cells[3].outputs[0]["data"]) == ["text/html"]
    assert "widgets" not in page.metadata and page.metadata["paa_site"]["setting"] == "fast"

    executed.cells[0].outputs = [v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    with pytest.raises(site_builder.SiteError, match="boom"):
        site_builder.for_the_site(executed, committed, site_builder.NOTEBOOKS[0], "fast")


def test_the_paper_table_links_every_code_reference_to_an_api_identifier(site_builder):
    readme = (REPO / "README.md").read_text()
    linked = site_builder.link_code_references(readme)
    start = linked.index("## Where the paper lives in the code")
    table = linked[start : linked.index("\n## ", start + 5)]
    assert "[`paa_toolkit/assign/gmm.py::fit_gmm`][paa_toolkit.assign.gmm.fit_gmm]" in table
    assert "[`paa_toolkit/model/losses.py`][paa_toolkit.model.losses]" in table
    assert "[paa_toolkit.assign.paa.PAAAssigner]" in table  # PAAAssigner.__call__: its class
    assert not re.search(r"(?<!\[)`paa_toolkit/[\w/]+\.py", table), "a code reference was left unlinked"
    assert linked[:start] == readme[:start]  # nothing else changes


@pytest.mark.parametrize("package", FRONT_DOORS)
def test_every_front_door_has_an_api_page_and_exports_what_it_lists(package):
    page = REPO / "docs" / "api" / f"{package}.md"
    assert f"::: paa_toolkit.{package}\n" in page.read_text(), f"{page} does not document paa_toolkit.{package}"
    module = importlib.import_module(f"paa_toolkit.{package}")
    assert module.__all__, f"paa_toolkit.{package} exports nothing"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"paa_toolkit.{package}.__all__ lists names it does not have: {missing}"


# ---- the built site in a browser (slow) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_site(request, site_builder, tmp_path_factory, record_testsuite_property):
    """``make docs``, strict, in this session's setting; returns the site folder (``site/``)."""
    if os.environ.get("PAA_SKIP_BROWSER") == "1":
        pytest.skip("PAA_SKIP_BROWSER=1")
    which = site_builder.setting()
    cache = tmp_path_factory.mktemp("paa_cache_fast") if which == "fast" else request.getfixturevalue("course_cache")
    with pytest.MonkeyPatch.context() as mp:  # a notebook executed here uses the session's detector
        mp.setenv("PAA_TOOLKIT_CACHE", str(cache))
        start = time.perf_counter()
        site = site_builder.build(which, strict=True)
        seconds = time.perf_counter() - start
    print(f"\nsite built ({which} setting, strict) in {seconds:.1f} s")
    record_testsuite_property("site_build_seconds", round(seconds, 1))
    return site


@pytest.fixture(scope="module")
def server(built_site):
    """``python -m http.server -d site`` on 127.0.0.1, stopped by its PID."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(built_site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with urllib.request.urlopen(url + "/", timeout=2) as response:
            return response.status == 200

    try:
        wait_until(answers, 30, "the site's http.server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def page(server):
    """A Chromium page that lets only requests to the site's server through, and records the others."""
    try:
        check_browser()
    except BrowserUnavailable as err:
        pytest.fail(str(err))  # CI must not pass silently without the browser test
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(server + "/"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    with chromium_page() as p:
        p.route("**/*", route)
        p.outside = outside
        yield p
        assert outside == [], f"requests that leave localhost: {outside}"


@contextmanager
def screenshot_on_failure(page, name: str):
    """What the browser showed when an assertion failed: test-artifacts/site_<name>_failure.png."""
    try:
        yield
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"site_{name}_failure.png")
        raise


#: notebook 01's Fig. 1: the first output image after its heading "6. Fig. 1: ..." (null: no such heading)
FIG_1 = """() => {
    const cells = [...document.querySelectorAll('.jp-Cell')];
    const isFig1 = h => /^6\\.\\s*Fig\\. 1\\b/.test(h.textContent);
    const at = cells.findIndex(c => [...c.querySelectorAll('h2')].some(isFig1));
    if (at < 0) return null;
    const img = cells.slice(at + 1).map(c => c.querySelector('.jp-OutputArea-output img')).find(i => i);
    if (!img) return 'no image';
    img.scrollIntoView();
    return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, src: img.src.slice(0, 22)};
}"""


@pytest.mark.slow
def test_notebook_01_shows_fig_1_decoded_and_its_formulas_typeset_offline(page, server):
    page.goto(f"{server}/notebooks/01_anchors_and_scores/", wait_until="load")
    with screenshot_on_failure(page, "notebook_01"):
        fig1 = page.evaluate(FIG_1)
        assert isinstance(fig1, dict), f"notebook 01's Fig. 1 heading or its figure is missing: {fig1}"
        wait_until(lambda: page.evaluate(FIG_1)["complete"], 30, "Fig. 1 to load")
        fig1 = page.evaluate(FIG_1)
        assert fig1["src"].startswith("data:image/png"), fig1
        assert fig1["width"] > 300 and fig1["height"] > 100, f"Fig. 1 is not decoded: {fig1}"
        # Eq. (1)-(3) in the text: typeset by the MathJax copied into the site, not left as $...$
        wait_until(
            lambda: page.evaluate("() => document.querySelectorAll('.MathJax').length") > 10,
            60,
            "MathJax to typeset the formulas",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "site_notebook_01_fig1.png")


@pytest.mark.slow
def test_search_finds_fit_gmm_and_leads_to_its_api_entry(page, server):
    page.goto(f"{server}/", wait_until="load")
    with screenshot_on_failure(page, "search"):
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.locator("input.md-search__input").fill("fit_gmm")
        page.locator(".md-search-result__item a", has_text="fit_gmm").first.wait_for(timeout=30_000)
        hrefs = page.eval_on_selector_all(".md-search-result a", "links => links.map(a => a.href)")
        entry = [h for h in hrefs if h.endswith("/api/assign/?h=fit_gmm#paa_toolkit.assign.fit_gmm")]
        assert entry, f"no search result leads to the API entry of fit_gmm: {hrefs}"
        page.goto(entry[0], wait_until="load")
        assert page.locator("#paa_toolkit\\.assign\\.fit_gmm").is_visible()


@pytest.mark.slow
def test_api_page_of_fit_gmm_shows_its_signature_and_returns(page, server):
    page.goto(f"{server}/api/assign/#paa_toolkit.assign.fit_gmm", wait_until="load")
    with screenshot_on_failure(page, "api_fit_gmm"):
        entry = page.locator("div.doc-object:has(> #paa_toolkit\\.assign\\.fit_gmm)").first
        signature = entry.locator(".doc-signature").first.inner_text()
        assert signature.startswith("fit_gmm(") and "values: Tensor" in signature and "-> GMMFit" in signature, (
            signature
        )
        contents = entry.locator("> .doc-contents").first.inner_text()
        assert "Returns:" in contents and "GMMFit" in contents.split("Returns:", 1)[1], contents[-600:]
        assert "[G, N]" in contents  # the shapes of Args


@pytest.mark.slow
def test_the_paper_table_links_fit_gmm_to_its_api_page(page, server):
    page.goto(f"{server}/", wait_until="load")
    link = page.locator("table a", has_text="paa_toolkit/assign/gmm.py::fit_gmm").first
    assert link.get_attribute("href").endswith("api/assign/#paa_toolkit.assign.fit_gmm")
    link.click()
    page.wait_for_url("**/api/assign/#paa_toolkit.assign.fit_gmm")
    assert page.locator("#paa_toolkit\\.assign\\.fit_gmm").is_visible()


@pytest.mark.slow
@pytest.mark.parametrize("url", ["benchmarks/", "benchmarks/ablations/"])
def test_the_benchmark_pages_show_their_figures_decoded(page, server, url):
    page.goto(f"{server}/{url}", wait_until="load")
    with screenshot_on_failure(page, url.strip("/").replace("/", "_")):
        images = page.eval_on_selector_all("article img", "imgs => imgs.map(i => [i.src, i.naturalWidth])")
        assert any("results/analysis_" in src for src, _ in images), images
        assert all(width > 0 for _, width in images), f"figures not decoded: {images}"


def test_a_settings_fields_comment_is_its_description_on_the_api_page():
    griffe = pytest.importorskip("griffe")
    extensions = griffe.load_extensions(f"{REPO / 'docs' / 'griffe_extensions.py'}:FieldComments")
    config = griffe.load("paa_toolkit.engine.config", search_paths=[str(REPO)], extensions=extensions)
    assert config["ModelConfig.anchor_scale"].docstring.value == "anchor size = stride × this (paper: 8; Table 4: 4–10)"
