"""Fixtures shared by several test modules; the ``cuda`` marker's skip."""

import importlib.util
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from paa_toolkit.course import briefly_trained_run, course_config, course_run_dir
from paa_toolkit.data.synthetic import make_synthetic_coco
from paa_toolkit.engine.loop import train

from tiny_training import tiny_config  # tests/tiny_training.py

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def site_builder():
    """``docs/build_site.py`` (``make docs``) as a module: the notebook tests write what the site renders."""
    if "build_site" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_site"] = module
        spec.loader.exec_module(module)
    return sys.modules["build_site"]


@contextmanager
def torch_threads(count: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where no CUDA device is available (never reported as passed)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run fastest on one thread, and far faster when other jobs share the CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The 6-image (3 val), 64-px synthetic dataset the training tests run on."""
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "syn", seed=0, num_train=6, num_val=3, image_size=64)


@pytest.fixture(scope="session")
def reference_run(synthetic_root, tmp_path_factory):
    """One finished run (4 iterations, traces at 0/2/4, an evaluation at 2) that several tests inspect;
    trained on one thread, as the runs it is compared with."""
    run_dir = tmp_path_factory.mktemp("reference")
    with torch_threads(1):
        return run_dir, train(tiny_config(synthetic_root, run_dir, trace_iters=[0, 2, 4], eval_every=2), progress=False)


@pytest.fixture(scope="session")
def course_cache(tmp_path_factory) -> Path:
    """A cache folder with the course detector of the student setting (``make course``), trained once per
    session into a fresh folder — as on a clean clone; the notebooks and the browser test share it.
    ``PAA_TEST_COURSE_CACHE=<folder>`` uses (and fills, if needed) that folder instead, for local reruns."""
    folder = os.environ.get("PAA_TEST_COURSE_CACHE")
    cache = Path(folder) if folder else tmp_path_factory.mktemp("paa_cache_course")
    with pytest.MonkeyPatch.context() as mp:  # the synthetic images are generated into the cache too
        mp.setenv("PAA_TOOLKIT_CACHE", str(cache))
        start = time.perf_counter()
        run_dir = briefly_trained_run(False, cache_dir=cache)
        print(f"\ncourse detector {run_dir} ready after {time.perf_counter() - start:.0f} s")
    assert run_dir == course_run_dir(course_config(False), cache)
    return cache
