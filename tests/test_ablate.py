"""Specifications of ``python -m paa_toolkit.ablate``: the grids (names, overrides), the runner
(skip when complete, resume, failures as results, locks), the table formatting, and one tiny grid
trained end to end."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from paa_toolkit import ablate
from paa_toolkit.ablation import runner
from paa_toolkit.ablation.grid import TABLES, build_config, build_plan, to_argv
from paa_toolkit.ablation.report import RowResult, collect, comparisons, markdown_table, training_means, verdict
from paa_toolkit.ablation.runner import (
    ABLATE_INFO,
    FAILED,
    LOCK,
    acquire_lock,
    execute,
    run_state,
    settings_differences,
)
from paa_toolkit.cli import parse_args
from paa_toolkit.engine.checkpoint import FINAL_METRICS
from paa_toolkit.engine.config import ConfigError


# ---- grids ----------------------------------------------------------------------------------------
def test_table_1_right_rows_map_onto_rule_aux_and_voting():
    plan = {p.config.name: p.overrides for p in build_plan("1R", "small", 1, "out")}
    assert list(plan) == [
        "iou_assign",
        "iou_assign_ioupred",
        "paa_noaux",
        "paa_centerness",
        "paa_ioupred",
        "paa_ioupred_voting",
        "atss_centerness",
        "atss_ioupred",
    ]
    expected = {  # (assignment rule, aux, score voting); PAA is rule "c", Fig. 3 (c)
        "iou_assign": ("max_iou", "none", False),
        "iou_assign_ioupred": ("max_iou", "iou", False),
        "paa_noaux": ("c", "none", False),
        "paa_centerness": ("c", "centerness", False),
        "paa_ioupred": ("c", "iou", False),
        "paa_ioupred_voting": ("c", "iou", True),
        "atss_centerness": ("atss", "centerness", False),
        "atss_ioupred": ("atss", "iou", False),
    }
    for name, (rule, aux, voting) in expected.items():
        o = plan[name]
        assert (o["assign.rule"], o["model.aux"], o["test.score_voting"]) == (rule, aux, voting), name


def test_table_1_left_and_table_4_vary_one_setting_each():
    left = {p.config.name: p.overrides for p in build_plan("1L", "small", 1, "out")}
    assert [left[f"boundary_{b}"]["assign.rule"] for b in "abd"] == ["a", "b", "d"]
    assert [left[f"fnp_{n}"]["assign.fnp_num"] for n in (5, 10, 20)] == [5, 10, 20]
    assert {left[f"fsr_{t}"]["assign.rule"] for t in (0.1, 0.2, 0.3)} == {"fsr"}
    assert [left[f"fsr_{t}"]["assign.fsr_thresh"] for t in (0.1, 0.2, 0.3)] == [0.1, 0.2, 0.3]
    t4 = {p.config.name: p.overrides for p in build_plan("4", "small", 1, "out")}
    assert [t4[n]["assign.topk"] for n in ("topk_5", "paa_ioupred", "topk_18", "topk_25")] == [5, 9, 18, 25]
    assert [t4[n]["model.anchor_scale"] for n in ("anchor_scale_4", "anchor_scale_6", "anchor_scale_10")] == [4, 6, 10]


def test_identical_settings_share_one_run_folder_across_tables():
    dirs = {t: {p.config.name: p.run_dir for p in build_plan(t, "small", 1, "out")} for t in TABLES}
    reference = dirs["1R"]["paa_ioupred"]
    assert dirs["1L"]["paa_ioupred"] == dirs["4"]["paa_ioupred"] == dirs["baselines"]["paa_ioupred"] == reference
    assert reference == Path("out/small/paa_ioupred/seed0")


def test_score_voting_row_reevaluates_the_reference_checkpoint():
    plan = build_plan("1R", "small", 2, "out", only=["paa_ioupred_voting"])
    assert [p.name for p in plan] == ["paa_ioupred@0", "paa_ioupred@1", "paa_ioupred_voting@0", "paa_ioupred_voting@1"]
    voting = plan[3]
    assert voting.base_dir == Path("out/small/paa_ioupred/seed1") and voting.overrides["seed"] == 1


def test_baselines_use_torchvision_archs_on_the_same_budget_and_backbone():
    plan = {p.config.name: build_config(p.overrides).to_dict() for p in build_plan("baselines", "small", 1, "out")}
    assert plan["fcos"]["model"]["arch"] == "fcos" and plan["retinanet"]["model"]["arch"] == "retinanet"
    for key in ("model.backbone", "model.width", "model.min_size", "solver.max_iters", "data.synthetic_num_train"):
        section, name = key.split(".")
        assert plan["fcos"][section][name] == plan["retinanet"][section][name] == plan["paa_ioupred"][section][name], (
            key
        )


def test_every_planned_run_is_a_valid_train_config_and_survives_the_command_line(tmp_path):
    for table in TABLES:
        for budget, extra in (("small", None), ("tiny", None), ("paper", {"data.root": str(tmp_path)})):
            for run in build_plan(table, budget, 1, "out", extra=extra):
                assert parse_args(to_argv(run.overrides)).to_dict() == build_config(run.overrides).to_dict()


def test_unknown_only_names_and_bad_set_values_are_clear_errors(capsys):
    with pytest.raises(ConfigError, match="fsr_0.9 not in table 1L"):
        build_plan("1L", "small", 1, "out", only=["fsr_0.9"])
    with pytest.raises(SystemExit):
        ablate.main(["--table", "1R", "--set", "model.aux=bogus", "--list"])
    assert "model.aux: unknown value 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablate.main(["--table", "1R", "--budget", "paper", "--set", "data.root=."])
    assert "--set model.backbone_weights=FILE" in capsys.readouterr().err


def test_list_prints_one_config_name_per_line_with_its_state(capsys, tmp_path):
    assert ablate.main(["--table", "4", "--list", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == TABLES["4"].config_names()
    assert all(ln.endswith("\tmissing") for ln in lines)


def test_analysis_table_plans_the_remedies_atss_and_fcos_at_the_medium_budget_with_three_seeds():
    plan = build_plan("analysis", "medium", 3, "out")
    names = list(dict.fromkeys(p.config.name for p in plan))
    assert names == ["paa_ioupred", "paa_gt_match", "paa_data_init", "paa_gt_match_data_init", "atss_ioupred", "fcos"]
    assert [p.seed for p in plan if p.config.name == "paa_gt_match"] == [0, 1, 2] and len(plan) == 18
    cfg = {p.config.name: build_config(p.overrides) for p in plan if p.seed == 0}
    settings = {n: (c.model.arch, c.assign.rule, c.assign.low_quality, c.assign.gmm_init) for n, c in cfg.items()}
    assert settings == {
        "paa_ioupred": ("paa", "c", "reference", "paper"),
        "paa_gt_match": ("paa", "c", "gt", "paper"),
        "paa_data_init": ("paa", "c", "reference", "data"),
        "paa_gt_match_data_init": ("paa", "c", "gt", "data"),
        "atss_ioupred": ("paa", "atss", "reference", "paper"),
        "fcos": ("fcos", "c", "reference", "paper"),
    }
    assert {c.model.aux for n, c in cfg.items() if n != "fcos"} == {"iou"}
    assert {(c.solver.max_iters, c.data.synthetic_image_size) for c in cfg.values()} == {(400, 256)}
    assert TABLES["analysis"].reference == "paa_ioupred"


def test_one_seed_never_resolves_a_difference_however_large():
    assert verdict([0.5]) == verdict([-0.5]) == verdict([]) == "unresolved"


def test_consistent_differences_beyond_two_standard_errors_hold_or_reverse():
    assert verdict([0.020, 0.025, 0.022]) == "holds"
    assert verdict([-0.020, -0.025, -0.022]) == "reversed"
    assert verdict([0.020, 0.025], labels=("higher", "lower")) == "higher"


def test_noisy_or_mixed_sign_differences_are_within_noise():
    assert verdict([0.03, -0.01, 0.02]) == "within noise"  # signs differ
    assert verdict([0.001, 0.05, 0.002]) == "within noise"  # same sign, mean 0.018 < 2 · 0.028 / √3


def seeds(*aps):
    return [
        {
            "state": "complete",
            "AP": ap,
            "AP50": ap,
            "AP75": ap,
            "APs": ap,
            "APm": ap,
            "APl": None,
            "pos_per_gt": 5.0,
            "gt_without_pos": 0.1,
            "wall_s": 1.0,
        }
        for ap in aps
    ]


def test_analysis_report_shows_paired_differences_and_verdicts_against_the_reference():
    spec = TABLES["analysis"].rows
    aps = {"paa_ioupred": (0.20, 0.22, 0.21), "paa_gt_match": (0.25, 0.26, 0.27), "paa_data_init": (0.21, 0.21, 0.20)}
    rows = [RowResult(r.cells, r.config, r.paper, seeds(*aps.get(r.config, (0.1, 0.12, 0.11)))) for r in spec]
    rows[-1].seeds = seeds(0.3)[:1] + [{"state": "missing"}] * 2  # FCOS: only seed 0 finished
    compared = comparisons(rows, "paa_ioupred")
    assert compared["paa_gt_match"]["AP"]["per_seed"] == pytest.approx([0.05, 0.04, 0.06])
    assert compared["paa_gt_match"]["AP"]["verdict"] == "higher"
    assert compared["paa_data_init"]["AP"]["verdict"] == "within noise"
    assert compared["atss_ioupred"]["AP"]["verdict"] == "lower"
    assert compared["fcos"]["AP"]["verdict"] == "unresolved" and compared["fcos"]["APl"]["verdict"] == "pending"
    text = markdown_table("analysis", rows, "medium", 3)
    assert "| PAA + gt matching | +0.050, +0.040, +0.060 | +0.050 ± 0.010 (higher) |" in text
    assert "| torchvision FCOS | +0.100, –, – | +0.100 (unresolved) |" in text
    assert "| GTs w/o pos. (%) |" in text and "| 10.0 ± 0.0 |" in text  # fractions shown in percent


def test_training_means_average_the_logged_figures_overall_and_over_the_last_third(tmp_path):
    records = [
        {"kind": "train", "iteration": i, "gt_without_pos": v, "em_iters": 3.0}
        for i, v in zip(range(20, 140, 20), (0.6, 0.5, 0.4, 0.3, 0.2, 0.1))
    ]
    records.insert(3, {"kind": "eval", "iteration": 60, "AP": 0.1})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert training_means(tmp_path, ("gt_without_pos", "em_iters", "em_collapsed")) == pytest.approx(
        {"gt_without_pos": 0.35, "em_iters": 3.0, "em_collapsed": None}
    )
    assert training_means(tmp_path, ("gt_without_pos",), last_fraction=1 / 3)["gt_without_pos"] == pytest.approx(0.15)


# ---- runner -----------------------------------------------------------------------------------------
FAKE_TRAIN = textwrap.dedent("""
    import json, sys, pathlib
    args = sys.argv[1:]
    out = pathlib.Path(args[args.index("--output-dir") + 1])
    (out / "argv.json").write_text(json.dumps(args))
    if "--assign.rule" in args and args[args.index("--assign.rule") + 1] == "fsr":
        print("error: non-finite loss at iteration 3 (loss_cls=nan); training stopped.", file=sys.stderr)
        sys.exit(1)
    (out / "final_metrics.json").write_text(json.dumps({"AP": 0.5, "AP50": 0.75, "AP75": 0.25}))
""")


@pytest.fixture
def fake_launcher(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return [sys.executable, str(script)]


def test_a_complete_run_is_skipped_without_launching_anything(tmp_path):
    run = build_plan("1R", "tiny", 1, tmp_path, only=["paa_noaux"])[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / FINAL_METRICS).write_text("{}")
    outcome = execute(run, launcher=[sys.executable, "-c", "raise SystemExit(3)"], echo=lambda *_: None)
    assert outcome.state == "skipped" and not (run.run_dir / FAILED).exists()


def test_a_complete_run_trained_with_other_settings_is_named_in_a_warning_and_bookkeeping_is_not(tmp_path):
    run = build_plan("1R", "tiny", 1, tmp_path, only=["paa_noaux"], extra={"eval_every": 0})[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / FINAL_METRICS).write_text("{}")
    cfg = build_config(run.overrides)
    cfg.eval_every, cfg.log_every, cfg.trace_images, cfg.name = 300, 7, 16, "probe"  # changes what it records only
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    said = []
    assert execute(run, echo=said.append).state == "skipped" and said == []
    cfg.solver.lr, cfg.assign.rule = 0.04, "atss"  # changes what it learns
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert execute(run, echo=said.append).state == "skipped"
    assert len(said) == 1 and "solver.lr = 0.04 (planned: the default)" in said[0]
    assert "assign.rule = 'atss' (planned: the default)" in said[0] and str(run.run_dir) in said[0]
    (run.run_dir / "config.yaml").write_text("model: [unclosed")
    assert "cannot be read" in settings_differences(run)["config.yaml"]


def test_an_incomplete_run_is_launched_with_resume_into_its_own_folder(tmp_path, fake_launcher):
    run = build_plan("1R", "tiny", 1, tmp_path, only=["paa_noaux"])[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "last.pth").write_text("half a run")
    assert run_state(run.run_dir) == "incomplete"
    assert execute(run, launcher=fake_launcher, echo=lambda *_: None).state == "complete"
    argv = json.loads((run.run_dir / "argv.json").read_text())
    assert argv[argv.index("--output-dir") + 1] == str(run.run_dir) and argv[-1] == "--resume"
    assert argv[argv.index("--model.aux") + 1] == "none" and run_state(run.run_dir) == "complete"
    assert not (run.run_dir / LOCK).exists()


def test_a_diverging_training_is_recorded_as_a_result_not_raised(tmp_path, fake_launcher):
    run = build_plan("1L", "tiny", 1, tmp_path, only=["fsr_0.3"])[0]
    assert execute(run, launcher=fake_launcher, echo=lambda *_: None).state == "failed"
    failure = json.loads((run.run_dir / FAILED).read_text())
    assert failure["status"] == "diverged" and "non-finite loss" in failure["message"]
    assert execute(run, launcher=fake_launcher, echo=lambda *_: None).state == "skipped"  # not retried...
    assert (
        execute(run, launcher=fake_launcher, retry_failed=True, echo=lambda *_: None).state == "failed"
    )  # ...unless asked


def test_a_locked_run_is_left_to_its_owner_and_a_dead_owners_lock_is_taken_over(tmp_path, fake_launcher):
    run = build_plan("1R", "tiny", 1, tmp_path, only=["paa_noaux"])[0]
    lock = acquire_lock(run.run_dir)
    assert lock is not None and acquire_lock(run.run_dir) is None
    assert execute(run, launcher=fake_launcher, echo=lambda *_: None).state == "running"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = json.loads(lock.read_text())
    lock.write_text(json.dumps({**owner, "pid": int(dead.stdout)}))  # its process has exited
    assert execute(run, launcher=fake_launcher, echo=lambda *_: None).state == "complete"


def test_a_run_folder_that_is_a_broken_link_fails_that_run_in_one_line_and_launches_nothing(tmp_path, fake_launcher):
    run = build_plan("1R", "tiny", 1, tmp_path, only=["paa_noaux"])[0]
    run.run_dir.parent.mkdir(parents=True)
    run.run_dir.symlink_to(tmp_path / "gone")  # e.g. a seed linked from another grid that was never trained
    said = []
    assert execute(run, launcher=fake_launcher, echo=said.append).state == "failed"
    assert said == [
        f"[ablate] {run.name}: failed: run folder {run.run_dir} is a link to a missing folder: remove it "
        "(or choose another --out)"
    ]
    assert not (tmp_path / "gone").exists()


def test_a_reevaluation_waits_for_its_trained_base_run(tmp_path):
    voting = build_plan("1R", "tiny", 1, tmp_path, only=["paa_ioupred_voting"])[-1]
    assert voting.config.name == "paa_ioupred_voting"
    assert execute(voting, echo=lambda *_: None).state == "pending"
    assert run_state(voting.run_dir) == "incomplete" and not (voting.run_dir / FAILED).exists()


def test_parallel_jobs_run_every_training_once_seed_0_of_every_row_first(tmp_path, fake_launcher):
    plan = build_plan("1R", "tiny", 2, tmp_path, only=["paa_noaux", "paa_ioupred"])
    outcomes = ablate.run_grid(plan + plan[:1], fake_launcher, retry_failed=False, jobs=2)  # a duplicate: run once
    assert [o.run.name for o in outcomes] == ["paa_noaux@0", "paa_ioupred@0", "paa_noaux@1", "paa_ioupred@1"]
    assert {o.state for o in outcomes} == {"complete"}


# ---- report -------------------------------------------------------------------------------------------
def test_markdown_table_shows_mean_and_sample_std_and_failures_in_the_paper_layout():
    ok = [
        {"state": "complete", "AP": 0.30, "AP50": 0.5, "AP75": 0.2, "pos_per_gt": 4.0, "wall_s": 60.0},
        {"state": "complete", "AP": 0.34, "AP50": 0.5, "AP75": 0.3, "pos_per_gt": 6.0, "wall_s": 80.0},
    ]
    diverged = {"state": "failed", "status": "diverged", "message": "non-finite loss"}
    no_positives = {**ok[0], "AP": 0.0, "pos_per_gt": 0.0}
    spec = TABLES["1L"].rows
    seeds = [ok] + [[diverged]] * (len(spec) - 2) + [[no_positives]]
    rows = [RowResult(r.cells, r.config, r.paper, s) for r, s in zip(spec, seeds)]
    text = markdown_table("1L", rows, "small", 2)
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| Anchor Sep. | AP | AP50 | AP75 | pos/GT |")
    assert lines[1] == "| Fig. 3 (a) | 0.320 ± 0.028 | 0.500 ± 0.000 | 0.250 ± 0.071 | 5.0 ± 1.4 | 70 | 40.5 |"
    assert lines[2].startswith("| Fig. 3 (b) | diverged |")
    fsr_row = next(ln for ln in lines if ln.startswith("| FSR (> 0.3) |"))  # the table's last row
    assert "0.000 (0 positives)" in fsr_row and "training failed" in fsr_row


def test_report_of_a_grid_with_nothing_finished_marks_every_row_pending(tmp_path):
    rows = collect("1R", tmp_path, "small", 2)
    assert len(rows) == 8 and {r.status for r in rows} == {"pending"}


# ---- end to end: two configs, a few iterations, tiny images ------------------------------------------
@pytest.mark.slow
def test_tiny_grid_end_to_end_writes_one_row_per_config_with_numbers_in_0_1(tmp_path, capsys):
    out = tmp_path / "abl"
    args = ["--table", "1R", "--budget", "tiny", "--only", "paa_noaux", "paa_ioupred", "--out", str(out)]
    assert ablate.main(args) == 0
    md = (out / "tiny" / "table_1R.md").read_text()
    lines = md.splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("| Method"))) + 2  # the table, then paired / claims
    rows = lines[start : lines.index("", start)]
    assert len(rows) == len(TABLES["1R"].rows)
    assert "**The paper's claims**" in md and "| PAA IoU pred. > PAA Center pred. | +1.0 |" in md
    finished = [r for r in rows if r.startswith(("| PAA |  |  |", "| PAA | IoU pred. |  |"))]
    assert len(finished) == 2 and all("pending" in r for r in rows if r not in finished)
    for row in finished:
        numbers = [float(x) for x in re.findall(r"\| (\d+\.\d{3}) ", row)]
        assert len(numbers) == 3 and all(0.0 <= x <= 1.0 for x in numbers), row
    data = json.loads((out / "tiny" / "table_1R.json").read_text())
    assert [r["status"] for r in data["rows"]].count("ok") == 2
    assert (out / "tiny" / "table_1R.png").stat().st_size > 1000
    # a second call skips both runs (complete) and only rewrites the table
    (out / "tiny" / "paa_noaux" / "seed0" / "metrics.jsonl").unlink()
    assert ablate.main(args) == 0 and not (out / "tiny" / "paa_noaux" / "seed0" / "metrics.jsonl").exists()


def test_successors_table_compares_tal_and_simota_with_paa_first_on_paas_loss_then_with_their_soft_targets():
    plan = {p.config.name: p.overrides for p in build_plan("successors", "medium", 1, "out")}
    assert list(plan) == ["paa_ioupred", "atss_ioupred", "tal_ioupred", "simota_ioupred", "tal_soft", "simota_soft"]
    rule_and_soft = {
        name: (o["assign.rule"], o.get("assign.tal_soft_target", o.get("assign.simota_soft_target")))
        for name, o in plan.items()
    }
    assert rule_and_soft == {
        "paa_ioupred": ("c", None),
        "atss_ioupred": ("atss", None),
        "tal_ioupred": ("tal", False),
        "simota_ioupred": ("simota", False),
        "tal_soft": ("tal", True),
        "simota_soft": ("simota", True),
    }
    assert {o["model.aux"] for o in plan.values()} == {"iou"} and TABLES["successors"].reference == "paa_ioupred"


def test_a_running_training_saves_its_wall_time_so_a_killed_session_keeps_it_and_a_resume_adds_to_it(tmp_path):
    info = tmp_path / ABLATE_INFO
    info.write_text(json.dumps({"wall_s": 100.0}))  # what an earlier, killed session had recorded
    child = f"import time, pathlib; time.sleep(0.5); print(pathlib.Path({str(info)!r}).read_text())"
    with open(tmp_path / "train.log", "w") as log:
        returncode, wall = runner._call_recording_wall([sys.executable, "-c", child], log, info, 100.0, every=0.05)
    seen_while_running = json.loads((tmp_path / "train.log").read_text())
    assert seen_while_running["returncode"] is None and 100.0 < seen_while_running["wall_s"] < wall
    assert returncode == 0 and json.loads(info.read_text())["wall_s"] == wall >= 100.5
