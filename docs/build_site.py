"""Build the static site (``make docs``): the README, the course executed with its outputs, the benchmark
pages, CONTRIBUTING and an API reference from the docstrings, into ``site/``.

    python docs/build_site.py                 # student setting, strict (what CI builds)
    PAA_FAST=1 python docs/build_site.py      # a quick local preview: the tiny detector, figures not the paper's
    python -m http.server -d site             # then open http://127.0.0.1:8000

Tools: mkdocs-material (a static site with a local search index, no external fonts with ``font: false``),
mkdocs-jupyter (renders executed ``.ipynb`` as pages; it does not execute them here) and mkdocstrings-python
(API pages read from the docstrings by static analysis: nothing is imported; ``docs/griffe_extensions.py``).
``mkdocs.yml`` holds the navigation and the settings; this script only lays out the pages mkdocs reads, in
``build/site-src/``:

* ``index.md`` = ``README.md``, whose "Where the paper lives in the code" table is rewritten so that each
  ``paa_toolkit/...py::name`` links to its API page (an unknown name fails the build: autorefs, strict);
* ``notebooks/*.ipynb`` = each course notebook executed (:func:`executed_notebook`): taken from
  ``build/course/<setting>/`` when ``tests/test_notebooks.py`` ran it there from the same source (CI: the
  course detector is trained once, by the test session), otherwise executed here against the cached course
  detector (``make course``; trained on first use). In the site form (:func:`for_the_site`) the answer cells
  are as committed (``answer = ...``, no output), the check cells carry no output, the solutions stay
  collapsed ``<details>`` blocks, and a widget's output is replaced by a note (its state would load the
  widget manager from a CDN). An error output fails the build;
* ``benchmarks/``, ``docs/`` and ``notebooks/README.md`` as they are, with the figures they show;
* ``assets/mathjax/``: MathJax 2 from the ``jupyter-server-mathjax`` wheel, so the notebooks' formulas are
  typeset offline.

``mkdocs build --strict`` then fails on a broken link or anchor, a missing API object or a notebook error.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "site-src"
EXECUTED = ROOT / "build" / "course"
SITE = ROOT / "site"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: copied as they are (repository path → site path): pages, and the files they show or link
COPIED = {
    p: p
    for p in (
        "CONTRIBUTING.md",
        "notebooks/README.md",
        "benchmarks/README.md",
        "benchmarks/ablations.md",
        "benchmarks/speed.md",
        "benchmarks/results",
        "docs/robustness.md",
        "docs/assignment_explorer.png",
        "docs/gmm_explorer.png",
        "docs/voting_explorer.png",
    )
}
COPIED.update({"docs/api": "api", "docs/stylesheets": "stylesheets"})
SETTINGS = ("student", "fast")
CELL_TIMEOUT_S = 600
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "<p><em>An interactive explorer (ipywidgets) is shown here when the notebook runs in JupyterLab: "
    "<code>make course</code>, then <code>jupyter lab notebooks/</code>.</em></p>"
)
EXERCISE_HEADING = re.compile(r"^#{1,6}\s*Exercise\s+(\d+)\b", re.IGNORECASE | re.MULTILINE)
#: a code reference in the README's paper table: `paa_toolkit/assign/gmm.py::fit_gmm` (or a module alone)
CODE_REF = re.compile(r"`(paa_toolkit/[\w/]+)\.py(?:::([\w.]+))?`")


class SiteError(RuntimeError):
    """The site cannot be built as it should be (a notebook error, a stale or missing executed notebook)."""


# ---- the course, executed ------------------------------------------------------------------------------
def setting() -> str:
    return "fast" if os.environ.get("PAA_FAST") == "1" else "student"


def source_digest(path: Path) -> str:
    """Digest of a committed notebook and of the library it runs: an executed copy is used only for the
    sources it was run from."""
    digest = hashlib.sha256(path.read_bytes())
    for module in sorted((ROOT / "paa_toolkit").rglob("*.py")):
        digest.update(module.relative_to(ROOT).as_posix().encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()[:16]


def executed_path(path: Path, which: str) -> Path:
    return EXECUTED / which / path.name


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def error_outputs(nb) -> list[str]:
    return [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, cell in enumerate(nb["cells"])
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def for_the_site(executed, committed, source: Path, which: str):
    """The page form of an executed notebook: answer cells as committed and empty, check cells without
    output (the tests run the hidden solutions in them), widget outputs replaced by a note, no widget state.

    ``executed`` and ``committed`` are nbformat notebooks of the same source (same cells, same order).
    Raises :class:`SiteError` on an error output or a cell that did not run.
    """
    errors = error_outputs(executed)
    if errors:
        raise SiteError(f"{source.name}: error outputs {errors}")
    nb = copy.deepcopy(executed)
    if len(nb["cells"]) != len(committed["cells"]):
        raise SiteError(
            f"{source.name}: the executed copy has {len(nb['cells'])} cells, the source {len(committed['cells'])}"
        )
    for cell, original in zip(nb["cells"], committed["cells"]):
        if cell["cell_type"] != "code":
            continue
        if not cell.get("execution_count"):
            raise SiteError(f"{source.name}: a code cell did not run ({original['source'][:60]!r})")
        if "exercise" in tags(original):
            cell["source"], cell["outputs"] = original["source"], []
        elif "check" in tags(original):
            cell["outputs"] = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_MIME in data:
                output["data"] = {"text/html": WIDGET_NOTE}
    nb["metadata"].pop("widgets", None)
    nb["metadata"]["paa_site"] = {"source": source_digest(source), "setting": which}
    return nb


def execute(source: Path, which: str, cache_dir: str | None = None):
    """Run a committed notebook top to bottom as a student's Run All does (answers left empty), in the
    ``python3`` kernel, in ``which`` setting; returns the executed notebook (nbformat)."""
    import nbclient
    import nbformat

    nb = nbformat.read(source, as_version=4)
    env_before = dict(os.environ)
    os.environ["PAA_FAST"] = "1" if which == "fast" else "0"
    os.environ.pop("PAA_CHECK_SOLUTIONS", None)
    if cache_dir:
        os.environ["PAA_TOOLKIT_CACHE"] = cache_dir
    try:
        with tempfile.TemporaryDirectory(prefix="paa-site-") as cwd:  # what a notebook writes stays out of the tree
            client = nbclient.NotebookClient(
                nb,
                kernel_name="python3",
                timeout=CELL_TIMEOUT_S,
                startup_timeout=120,
                allow_errors=False,
                resources={"metadata": {"path": cwd}},
            )
            client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb


def save_executed(executed, source: Path, which: str) -> Path:
    """Write the page form of ``executed`` where the site build looks for it (``build/course/<setting>/``)."""
    import nbformat

    out = executed_path(source, which)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(for_the_site(executed, nbformat.read(source, as_version=4), source, which), out)
    return out


def executed_notebook(source: Path, which: str, *, allow_execute: bool = True) -> Path:
    """The page form of ``source`` executed in ``which`` setting: reused when it was run from this source,
    executed here otherwise (unless ``allow_execute`` is False: then a :class:`SiteError`)."""
    import nbformat

    out = executed_path(source, which)
    if out.is_file():
        meta = nbformat.read(out, as_version=4)["metadata"].get("paa_site", {})
        if meta.get("source") == source_digest(source) and meta.get("setting") == which:
            return out
    if not allow_execute:
        raise SiteError(f"{source.name}: no executed copy of this source in {out.parent} (--no-execute)")
    start = time.perf_counter()
    print(f"executing {source.name} ({which} setting) ...", flush=True)
    out = save_executed(execute(source, which), source, which)
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return out


# ---- the pages -------------------------------------------------------------------------------------------
def api_identifier(module_path: str, name: str | None) -> str:
    """``paa_toolkit/assign/gmm`` + ``fit_gmm`` → ``paa_toolkit.assign.gmm.fit_gmm`` (a method: its class)."""
    dotted = module_path.replace("/", ".")
    if not name:
        return dotted
    parts = name.split(".")
    if len(parts) > 1 and parts[-1].startswith("__"):  # PAAAssigner.__call__ → the class
        parts = parts[:-1]
    return f"{dotted}.{'.'.join(parts)}"


def link_code_references(markdown: str) -> str:
    """In the README's "Where the paper lives in the code" table, link each code reference to its API page
    (mkdocs-autorefs resolves ``[text][identifier]``; strict mode fails on one it cannot find)."""
    heading = "## Where the paper lives in the code"
    start = markdown.find(heading)
    if start < 0:
        raise SiteError(f"README.md has no {heading!r} section")
    end = markdown.find("\n## ", start + len(heading))
    end = len(markdown) if end < 0 else end
    table = CODE_REF.sub(
        lambda m: f"[`{m.group(0)[1:-1]}`][{api_identifier(m.group(1), m.group(2))}]", markdown[start:end]
    )
    return markdown[:start] + table + markdown[end:]


def vendor_mathjax(stage: Path) -> None:
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(static, stage / "assets" / "mathjax", ignore=shutil.ignore_patterns("SVG", "*.map"))


def stage_pages(which: str, *, allow_execute: bool = True) -> Path:
    """Lay out ``build/site-src/`` for mkdocs; returns it."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    (STAGE / "index.md").write_text(link_code_references((ROOT / "README.md").read_text()))
    for rel, target in COPIED.items():
        src, dst = ROOT / rel, STAGE / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    for source in NOTEBOOKS:
        shutil.copy2(executed_notebook(source, which, allow_execute=allow_execute), STAGE / "notebooks" / source.name)
    if which == "fast":  # say so on every notebook page
        note = (
            "> **Preview built with `PAA_FAST=1`:** a tiny detector trained for seconds; its figures do not "
            "show what the text describes (`make docs` builds the student setting).\n\n"
        )
        for page in (STAGE / "notebooks").glob("*.ipynb"):
            nb = json.loads(page.read_text())
            nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": note})
            page.write_text(json.dumps(nb))
    vendor_mathjax(STAGE)
    return STAGE


def build(which: str | None = None, *, strict: bool = True, allow_execute: bool = True, site_dir: Path = SITE) -> Path:
    """Stage the pages and run ``mkdocs build`` (strict: any warning fails); returns the site folder."""
    which = which or setting()
    stage_pages(which, allow_execute=allow_execute)
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--clean",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "--site-dir",
        str(site_dir),
    ] + (["--strict"] if strict else [])
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return site_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/build_site.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-strict", action="store_true", help="report broken links as warnings only")
    parser.add_argument(
        "--no-execute",
        action="store_true",
        help="fail instead of executing a notebook that has no executed copy in build/course/",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        site = build(strict=not args.no_strict, allow_execute=not args.no_execute)
    except (SiteError, subprocess.CalledProcessError) as err:
        print(f"make docs: {err}", file=sys.stderr)
        return 1
    print(
        f"site built in {time.perf_counter() - start:.0f} s ({setting()} setting): {site}\n"
        f"open it: python -m http.server -d {site.relative_to(ROOT)}  →  http://127.0.0.1:8000"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
