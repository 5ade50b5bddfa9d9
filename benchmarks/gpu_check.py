"""One command that proves the GPU path (issue 13): CUDA-only tests, batched EM, speed vs torchvision FCOS,
the default run with AMP and with torch.compile, DDP over NCCL — each with its peak GPU memory.

    python benchmarks/gpu_check.py                        # a CUDA machine: ≤ 8 min → benchmarks/gpu_check.{md,json}
    python benchmarks/gpu_check.py --device cpu --quick   # any machine, about a minute: every code path at tiny sizes
    python benchmarks/gpu_check.py --only gmm ddp         # some sections (environment always runs)
    make gpu-check                                        # the first line, with the project's .venv

Sections (the code: ``gpu_check_sections.py``), in this order, each in a child process of its own (a
fresh CUDA context, its own peak memory) that is stopped at its time budget and then reported
"timeout" with what it had measured so far:

======================  ==========================================================  ======  ========
section                 what                                                        budget  estimate
======================  ==========================================================  ======  ========
environment             device name, torch / CUDA / cuDNN / NCCL versions (and the    25 s      8 s
                        one import of torch that every section forks from)
cuda_tests              ``pytest -m cuda`` on the test files that use the marker      35 s     15 s
gmm                     ``fit_gmm`` on the device vs the CPU float64 fit: label        30 s     15 s
                        agreement, time, host–device syncs per fit; G = 320, 2,000,
                        20,000; float32 and float64
speed                   train step and inference (score voting) vs torchvision FCOS,   85 s     50 s
                        ResNet-50, width 256, 800 px, batch 2, AMP off and on,
                        interleaved medians; shares of assignment and voting
train                   200 iterations of the default run with AMP, then its COCO     80 s     40 s
                        evaluation (``train()`` itself)
compile                 the same with ``torch.compile``, 20 iterations; compile time  150 s    100 s
                        reported separately (inductor compiles train and eval mode)
ddp                     one step under ``torchrun --nproc_per_node 1`` (and 2 with    60 s     35 s
                        two GPUs), NCCL, vs one process with the global batch
======================  ==========================================================  ======  ========

The budgets add up to 465 s, so the whole run stays within 8 minutes (``--total-budget``, 480 s, is
enforced too: a section that no longer fits is reported "not run"). Estimates are
guesses for one H200 until measured. On a machine without CUDA (or with ``--device cpu``) the quick
mode runs and every CUDA part is reported "skipped (no CUDA)" — never "passed"; its figures only show
that the code paths work. Host–device syncs are counted with ``torch.cuda.set_sync_debug_mode``
("not measured" on CPU).

A CPU run never replaces a report made on CUDA: it writes ``<out>.cpu-quick.{md,json}`` beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path[:0] = [p for p in (str(REPO), str(BENCHMARKS)) if p not in sys.path]


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    budget_s: float  # on CUDA: the child process is stopped here
    estimate_s: float  # expected on one H200 (a guess until measured)


SECTIONS = (
    Section("environment", "Device and versions", 25, 8),  # includes importing torch once (the forkserver)
    Section("cuda_tests", "1. CUDA-only tests (`pytest -m cuda`)", 35, 15),
    Section("gmm", "2. Batched EM on the device vs the CPU float64 fit", 30, 15),
    Section("speed", "3. Train step and inference vs torchvision FCOS", 85, 50),
    Section("train", "4a. The default run with AMP, then its evaluation", 80, 40),
    Section("compile", "4b. torch.compile, one short run", 150, 100),
    Section("ddp", "5. DDP under torchrun: one step vs one process", 60, 35),
)
TOTAL_BUDGET_S = 480  # issue 13: ≤ 8 minutes on one GPU
QUICK_SECTION_BUDGET_S = 150  # --quick: a guard only (each section takes seconds)
STATUS_TEXT = {"skipped": "skipped (no CUDA)"}


# ---- running the sections --------------------------------------------------------------------------
def child_main(name: str, device: str, quick: bool, work_dir: str, result_path: str, budget_s: float) -> None:
    """A section's process: a session of its own (so a timeout stops what it started too), then the section."""
    os.setsid()
    import gpu_check_sections

    gpu_check_sections.run_section(name, device, quick, work_dir, result_path, budget_s)


def run_child(ctx, section: Section, device: str, quick: bool, work_dir: Path, budget_s: float) -> dict[str, Any]:
    """Run one section in a child process, at most ``budget_s``; its saved result plus how it ended."""
    result_path = work_dir / f"{section.name}.json"
    start = time.perf_counter()
    proc = ctx.Process(target=child_main, args=(section.name, device, quick, str(work_dir), str(result_path), budget_s))
    proc.start()
    proc.join(budget_s)
    timed_out = proc.is_alive()
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.join(10)
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    return {"result": result, "timed_out": timed_out, "exit_code": proc.exitcode, "wall_s": time.perf_counter() - start}


def section_status(name: str, outcome: dict[str, Any], device_type: str) -> tuple[str, str]:
    """(status, reason). On a device other than CUDA a section is never "passed": at best "skipped"."""
    result = outcome["result"]
    if outcome["timed_out"]:
        return "timeout", f"stopped at its budget ({outcome['wall_s']:.0f} s); figures so far below"
    if result is None:
        return "error", f"its process ended without a result (exit code {outcome['exit_code']})"
    if result.get("error"):
        return "error", result["error"].strip().splitlines()[-1]
    if not result.get("done"):
        return "error", f"its process ended early (exit code {outcome['exit_code']})"
    failed = [c["name"] for c in result["checks"] if c["required"] and c["ok"] is False]
    if failed:
        return "failed", "; ".join(failed)
    if name == "environment":
        return "measured", ""
    if device_type != "cuda":
        return "skipped", "the CPU-quick code path ran and its checks passed; no CUDA figure"
    return "passed", ""


def run_all(args: argparse.Namespace, work_dir: Path, write) -> dict[str, Any]:
    ctx = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":  # torch is imported once, every section forks from there
        ctx.set_forkserver_preload(["torch", "torchvision", "gpu_check_sections"])
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # nothing initialises CUDA before a fork
    chosen = [s for s in SECTIONS if s.name == "environment" or not args.only or s.name in args.only]
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    report: dict[str, Any] = {
        "command": "python benchmarks/gpu_check.py " + shlex.join(args.argv),
        "started": started.isoformat(timespec="seconds"),
        "device": args.device,
        "device_type": None,
        "quick": args.quick,
        "mode": None,
        "total_budget_s": args.total_budget,
        "sections": [],
    }
    for i, section in enumerate(chosen):
        left = args.total_budget - (time.perf_counter() - clock)
        budget = min(QUICK_SECTION_BUDGET_S if report["quick"] else section.budget_s, left)
        entry: dict[str, Any] = {
            "name": section.name,
            "title": section.title,
            "budget_s": budget,
            "estimate_s": section.estimate_s,
        }
        if budget < 5:
            entry.update(status="not run", reason="out of time: the total budget is spent", wall_s=0.0)
        else:
            print(f"[{i + 1}/{len(chosen)}] {section.name} (≤ {budget:.0f} s) …", flush=True)
            outcome = run_child(ctx, section, report["device"], report["quick"], work_dir, budget)
            status, reason = section_status(section.name, outcome, report["device_type"] or "cpu")
            entry.update(
                outcome["result"] or {}, status=status, reason=reason, wall_s=outcome["wall_s"], name=section.name
            )
            print(
                f"    {STATUS_TEXT.get(status, status)}{': ' + reason if reason else ''} ({outcome['wall_s']:.1f} s)",
                flush=True,
            )
        report["sections"].append(entry)
        if section.name == "environment":
            if not set_device(report, entry, args):
                write(report)
                return report
        report["wall_s"] = time.perf_counter() - clock
        write(report)
    return report


def set_device(report: dict[str, Any], env: dict[str, Any], args: argparse.Namespace) -> bool:
    """The device of every later section, from the environment section's findings; False: stop here."""
    figures = env.get("figures") or {}
    has_cuda = bool(figures.get("cuda_available"))
    if report["device"] == "auto":
        report["device"] = "cuda:0" if has_cuda else "cpu"
    elif report["device"] == "cuda":
        report["device"] = "cuda:0"
    report["device_type"] = report["device"].split(":")[0]
    if report["device_type"] == "cuda" and not has_cuda:
        env.update(status="error", reason=f"--device {args.device}: no CUDA device here (use --device cpu --quick)")
        print(f"error: {env['reason']}", file=sys.stderr)
        return False
    if report["device_type"] != "cuda" and not report["quick"]:
        report["quick"] = True
        print("    no CUDA: running the CPU quick mode (tiny sizes; the CUDA parts are reported skipped)", flush=True)
    report["mode"] = (
        "GPU check" if not report["quick"] else "CUDA quick" if report["device_type"] == "cuda" else "CPU quick"
    )
    report["environment"] = figures
    return True


# ---- the report --------------------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    env = report.get("environment") or {}
    lines = [
        "# GPU check (issue 13)",
        "",
        f"`{report['command']}` · {report['started']} · {report.get('wall_s', 0):.0f} s "
        f"(total budget {report['total_budget_s']:.0f} s)",
        "",
    ]
    if report["mode"] == "CPU quick":
        lines += [
            "> **CPU quick mode — not GPU figures.** No CUDA device was used: every section ran its code path "
            "at tiny sizes on the CPU to show that it works, and every CUDA part is reported **skipped (no "
            "CUDA)**, never passed. Run `python benchmarks/gpu_check.py` on a CUDA machine for the real check.",
            "",
        ]
    elif report["mode"] == "CUDA quick":
        lines += [
            "> **CUDA quick mode**: the CUDA code paths at tiny sizes; the speed figures are not the "
            "paper-like setting.",
            "",
        ]
    if env:
        lines += [
            f"Device: **{env.get('device_name')}** · torch {env.get('torch')} (CUDA build {env.get('cuda_build')}"
            f", cuDNN {env.get('cudnn')}) · torchvision {env.get('torchvision')} · Python {env.get('python')} · "
            f"{env.get('gpu_count', 0)} GPU(s) · {env.get('cpu_count')} CPU cores",
            "",
        ]
    lines += [
        "| section | status | wall (s) | budget (s) | estimate on one H200 (s) | peak GPU memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in report["sections"]:
        peak = s.get("peak_gpu_mib")
        lines.append(
            f"| {s['title']} | **{STATUS_TEXT.get(s['status'], s['status'])}** | {s.get('wall_s', 0):.1f} "
            f"| {s['budget_s']:.0f} | {s['estimate_s']:.0f} | "
            f"{'n/a (CPU)' if peak is None else f'{peak:.0f} MiB'} |"
        )
    for s in report["sections"]:
        lines += [
            "",
            f"## {s['title']}",
            "",
            f"**{STATUS_TEXT.get(s['status'], s['status'])}**" + (f" — {s['reason']}" if s.get("reason") else ""),
        ]
        if report["mode"] == "CPU quick" and s["name"] != "environment" and s.get("tables"):
            lines += ["", "*CPU-quick figures (tiny sizes, not GPU figures):*"]
        for table in s.get("tables", []):
            lines += [
                "",
                table["caption"] + ":",
                "",
                "| " + " | ".join(table["header"]) + " |",
                "|" + "---|" * len(table["header"]),
            ]
            lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
        if s.get("checks"):
            lines += ["", "Checks:"]
            for c in s["checks"]:
                mark = {True: "✓", False: "✗", None: "–"}[c["ok"]]
                kind = "" if c["required"] else " (target, not required)"
                lines.append(f"- {mark} {c['name']}{kind}" + (f": {c['detail']}" if c["detail"] else ""))
        progress = (s.get("figures") or {}).get("progress")
        if s["status"] == "timeout" and progress:
            lines += [
                "",
                f"When stopped: {progress['iterations_logged']} iterations logged after "
                f"{progress['elapsed_s']:.0f} s of training; logged windows (s): "
                + (", ".join(f"{t:.2f}" for t in progress["window_s"]) or "none"),
            ]
        for note in s.get("notes", []):
            lines += ["", f"Note: {note}"]
        if s.get("error"):
            lines += ["", "```", s["error"].strip(), "```"]
    return "\n".join(lines) + "\n"


def output_paths(prefix: Path, device_type: str | None) -> tuple[Path, Path]:
    """``prefix``.md / .json, or ``prefix``.cpu-quick.* where a CUDA report would otherwise be replaced."""
    prefix = prefix.with_suffix("") if prefix.suffix in (".md", ".json") else prefix
    json_path = prefix.parent / (prefix.name + ".json")
    if device_type != "cuda" and json_path.exists():
        try:
            previous = json.loads(json_path.read_text()).get("device_type")
        except (OSError, ValueError):
            previous = None
        if previous == "cuda":
            prefix = prefix.parent / (prefix.name + ".cpu-quick")
    return prefix.parent / (prefix.name + ".md"), prefix.parent / (prefix.name + ".json")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (always on without CUDA)")
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCHMARKS / "gpu_check",
        help="report prefix: writes PREFIX.md and PREFIX.json (default benchmarks/gpu_check)",
    )
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SECTIONS[1:]], help="run only these sections")
    parser.add_argument("--total-budget", type=float, default=TOTAL_BUDGET_S, help="seconds for the whole check")
    parser.add_argument(
        "--start-method",
        choices=["forkserver", "spawn"],
        default="forkserver",
        help="how section processes start (forkserver: torch is imported once)",
    )
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        parser.error(f"--device: unknown value {args.device!r}; valid choices: auto, cpu, cuda, cuda:N")
    if args.quick and args.total_budget == TOTAL_BUDGET_S:
        args.total_budget = QUICK_SECTION_BUDGET_S * len(SECTIONS)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    written: list[Path] = []

    def write(report: dict[str, Any]) -> None:
        md_path, json_path = output_paths(args.out, report["device_type"])
        md_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
        md_path.write_text(markdown(report))
        written[:] = [md_path, json_path]

    with tempfile.TemporaryDirectory(prefix="paa_gpu_check_") as work:
        report = run_all(args, Path(work), write)
    statuses = [s["status"] for s in report["sections"]]
    print(
        f"{report['mode']}: "
        + ", ".join(f"{s['name']} {STATUS_TEXT.get(s['status'], s['status'])}" for s in report["sections"])
    )
    print("report: " + " and ".join(str(p) for p in written))
    return 1 if any(s in ("failed", "error", "timeout", "not run") for s in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
