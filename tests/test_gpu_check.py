"""Specification of ``benchmarks/gpu_check.py``: its CPU quick mode runs every section's code path, reports
every CUDA part as skipped — never as passed — and its CPU figures are present and finite."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402  (the orchestrator: no torch import)

CUDA_SECTIONS = ("cuda_tests", "gmm", "speed", "train", "compile", "ddp")


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def cpu_quick(tmp_path_factory):
    """``python benchmarks/gpu_check.py --device cpu --quick`` from the repository root, into a tmp dir."""
    prefix = tmp_path_factory.mktemp("gpu_check") / "report"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(prefix)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((prefix.parent / "report.json").read_text())
    return report, {s["name"]: s for s in report["sections"]}, (prefix.parent / "report.md").read_text()


@pytest.mark.slow
def test_cpu_quick_reports_every_cuda_section_as_skipped_never_passed(cpu_quick):
    report, sections, _ = cpu_quick
    assert report["mode"] == "CPU quick" and report["device_type"] == "cpu" and report["quick"]
    assert set(sections) == {"environment", *CUDA_SECTIONS}
    assert sections["environment"]["status"] == "measured"
    assert sections["environment"]["figures"]["device_name"] == "CPU (no CUDA device)"
    for name in CUDA_SECTIONS:
        assert sections[name]["status"] == "skipped", (name, sections[name]["reason"])
        assert sections[name]["done"] and not sections[name]["error"]
        assert sections[name]["peak_gpu_mib"] is None
        assert all(c["ok"] is not False for c in sections[name]["checks"] if c["required"]), sections[name]["checks"]
    cuda_tests = sections["cuda_tests"]["figures"]
    assert cuda_tests["passed"] == 0 and cuda_tests["failed"] == 0 and cuda_tests["skipped"] >= 4
    assert "tests/test_gmm.py" in cuda_tests["files"] and "tests/test_cuda.py" in cuda_tests["files"]


@pytest.mark.slow
def test_cpu_quick_figures_are_present_and_finite(cpu_quick):
    _, sections, _ = cpu_quick
    for fit in sections["gmm"]["figures"]["fits"]:
        assert finite(fit["ms"]) and fit["ms"] > 0 and finite(fit["cpu_float64_ms"])
        assert 0.995 <= fit["label_agreement"] <= 1 and fit["max_em_iterations"] > 0
        assert fit["syncs_per_fit"] is None  # not measured on CPU
    assert sections["gmm"]["figures"]["sync_counter"] == "not measured (CPU)"
    speed = sections["speed"]["figures"]
    assert "AMP on" not in speed  # AMP needs CUDA
    for case in speed["AMP off"]["cases"].values():
        assert all(finite(case[k]) and case[k] > 0 for k in ("ours_ms", "fcos_ms", "ratio")) and case["rounds"] >= 1
    for share, ms in speed["AMP off"]["shares"].values():
        assert 0 <= share <= 1 and finite(ms)
    assert speed["AMP off"]["shares"]["train_step_assignment"][0] > 0
    train = sections["train"]["figures"]
    assert train["iterations"] == 3 and finite(train["imgs_per_s"]) and train["imgs_per_s"] > 0
    assert train["amp_active"] is False and all(finite(train[k]) for k in ("wall_s", "loop_s"))
    assert all(finite(train["metrics"][k]) for k in ("AP", "AP50", "num_detections"))
    compiled = sections["compile"]["figures"]
    assert compiled["iterations"] == 3 and len(compiled["iteration_s"]) == 3
    assert (
        finite(compiled["compile_s"]) and finite(compiled["steady_iteration_s"]) and compiled["steady_iteration_s"] > 0
    )
    ddp = sections["ddp"]["figures"]["nproc_1"]
    assert (ddp["backend"], ddp["world_size"]) == ("gloo", 1)
    assert finite(ddp["rel_l2"]) and ddp["rel_l2"] <= 1e-5 and ddp["grad_l2"] > 0 and ddp["parameters"] > 100


@pytest.mark.slow
def test_cpu_quick_markdown_labels_cpu_figures_and_skipped_cuda_parts(cpu_quick):
    _, sections, md = cpu_quick
    assert "CPU quick mode — not GPU figures" in md
    assert md.count("*CPU-quick figures (tiny sizes, not GPU figures):*") == len(CUDA_SECTIONS)
    for name in CUDA_SECTIONS:
        assert f"| {sections[name]['title']} | **skipped (no CUDA)** |" in md
    assert "**passed**" not in md
    assert "not measured (CPU)" in md  # host–device syncs


def test_a_section_is_never_passed_off_cuda():
    ok = {
        "result": {"done": True, "error": None, "checks": [{"name": "x", "ok": True, "required": True}]},
        "timed_out": False,
        "exit_code": 0,
        "wall_s": 1.0,
    }
    assert gpu_check.section_status("gmm", ok, "cpu")[0] == "skipped"
    assert gpu_check.section_status("gmm", ok, "cuda")[0] == "passed"
    failing = {**ok, "result": {**ok["result"], "checks": [{"name": "x", "ok": False, "required": True}]}}
    assert gpu_check.section_status("gmm", failing, "cpu")[0] == "failed"
    target_missed = {**ok, "result": {**ok["result"], "checks": [{"name": "x", "ok": False, "required": False}]}}
    assert gpu_check.section_status("gmm", target_missed, "cuda")[0] == "passed"
    assert gpu_check.section_status("gmm", {**ok, "timed_out": True}, "cuda")[0] == "timeout"
    assert gpu_check.section_status("gmm", {**ok, "result": None, "exit_code": -9}, "cuda")[0] == "error"
    crashed = {**ok, "result": {**ok["result"], "error": "Traceback …\nRuntimeError: CUDA error"}}
    assert gpu_check.section_status("gmm", crashed, "cuda") == ("error", "RuntimeError: CUDA error")


def test_section_budgets_fit_in_eight_minutes_on_one_gpu():
    assert sum(s.budget_s for s in gpu_check.SECTIONS) <= gpu_check.TOTAL_BUDGET_S <= 8 * 60
    assert all(s.estimate_s < s.budget_s for s in gpu_check.SECTIONS)


def test_a_cpu_report_never_replaces_a_cuda_report(tmp_path):
    prefix = tmp_path / "gpu_check"
    assert gpu_check.output_paths(prefix, "cpu") == (tmp_path / "gpu_check.md", tmp_path / "gpu_check.json")
    (tmp_path / "gpu_check.json").write_text(json.dumps({"device_type": "cuda"}))
    assert gpu_check.output_paths(prefix, "cpu") == (
        tmp_path / "gpu_check.cpu-quick.md",
        tmp_path / "gpu_check.cpu-quick.json",
    )
    assert gpu_check.output_paths(prefix, "cuda") == (tmp_path / "gpu_check.md", tmp_path / "gpu_check.json")
