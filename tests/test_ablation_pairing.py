"""Paired comparisons pair runs that started alike: a training records its pre-trained body's digest, code, torch and
threads (``provenance.json``), and a report leaves out a seed whose two runs started from different bodies, saying
why, and lists what else differed between the runs it paired."""

import json

import torch
from conftest import torch_threads

from paa_toolkit.ablation.grid import TABLES
from paa_toolkit.ablation.pairing import pairing_caveats, pairing_problem
from paa_toolkit.ablation.report import collect, comparisons, judge_claim, markdown_table, paired_differences
from paa_toolkit.engine.checkpoint import FINAL_METRICS
from paa_toolkit.engine.provenance import PROVENANCE_FILE, file_digest, read_provenance, record_provenance

from tiny_training import tiny_config

CODE = {"toolkit_code": "sha256:c0de"}


def seed(ap, body="sha256:aaaa", threads=1, code="sha256:c0de", carried_from=None):
    provenance = (
        None
        if body is None
        else [{"from_iteration": 0, "backbone_weights": body, "threads": threads, "toolkit_code": code}]
    )
    out = {"state": "complete", "AP": ap, "provenance": provenance}
    return {**out, "carried_from": carried_from} if carried_from else out


def test_a_training_records_what_it_started_from_and_ran_on(reference_run):
    run_dir, _ = reference_run
    (record,) = read_provenance(run_dir)
    assert record["from_iteration"] == 0
    assert record["backbone_weights"] is None  # from scratch
    assert record["threads"] == 1 and record["torch"] == torch.__version__
    assert record["toolkit_code"].startswith("sha256:") and record["precision"] in ("float32", "bfloat16")


def test_a_pretrained_body_is_recorded_by_its_content_not_its_name(synthetic_root, tmp_path):
    from torchvision.models import resnet18

    from paa_toolkit.engine import train
    from paa_toolkit.model.backbone import norm_layer_for

    body = tmp_path / "body.pth"
    torch.manual_seed(0)
    torch.save(resnet18(norm_layer=norm_layer_for("gn")).state_dict(), body)
    run_dir = tmp_path / "run"
    cfg = tiny_config(synthetic_root, run_dir, checkpoint_every=1)
    cfg.model.backbone_norm, cfg.model.backbone_weights = "gn", str(body)
    cfg.solver.max_iters = 1
    with torch_threads(1):
        train(cfg, progress=False)
    (first,) = read_provenance(run_dir)
    assert first["backbone_weights"] == file_digest(body)
    torch.save(resnet18(norm_layer=norm_layer_for("gn")).state_dict(), body)  # rebuilt: same name, other weights
    assert file_digest(body) != first["backbone_weights"]

    record_provenance(run_dir, {"from_iteration": 1, "backbone_weights": file_digest(body)})  # a resume
    assert [r["from_iteration"] for r in read_provenance(run_dir)] == [0, 1]
    record_provenance(run_dir, {"from_iteration": 0, "backbone_weights": None})  # the run started again
    assert len(read_provenance(run_dir)) == 1


def test_two_bodies_never_pair_and_other_differences_are_caveats():
    assert pairing_problem(seed(0.5), seed(0.6)) is None
    assert pairing_problem(seed(0.5, body="sha256:aaaa"), seed(0.6, body="sha256:bbbb")) == (
        "pre-trained body sha256:aaaa ≠ sha256:bbbb"
    )
    assert pairing_caveats(seed(0.5, threads=1), seed(0.6, threads=2, code="sha256:beef")) == [
        "toolkit_code sha256:c0de ≠ sha256:beef",
        "threads 1 ≠ 2",
    ]
    # no record on one side: paired only when both seeds come from the same place
    old = seed(0.5, body=None, carried_from="results.json (2026-12-06)")
    assert pairing_problem(old, seed(0.6, body=None, carried_from="results.json (2026-12-06)")) is None
    assert "trained apart (results.json (2026-12-06) / this grid)" in pairing_problem(old, seed(0.6))
    assert pairing_problem(old, seed(0.6, body="None")) is None  # from scratch: no body to differ
    resumed = seed(0.6, threads=2)
    resumed["provenance"].append({"from_iteration": 800, "backbone_weights": "sha256:new", "threads": 1} | CODE)
    assert pairing_problem(seed(0.5), resumed) is None  # a resume loads its own checkpoint, not the body
    assert pairing_caveats(seed(0.5), resumed) == ["threads 1 ≠ 1 + 2"]


def write_run(root, config, k, ap, body):
    run = root / "tiny" / config / f"seed{k}"
    run.mkdir(parents=True)
    (run / FINAL_METRICS).write_text(json.dumps({"AP": ap, "AP50": 0.9, "AP75": 0.5}))
    (run / PROVENANCE_FILE).write_text(json.dumps([{"from_iteration": 0, "backbone_weights": body, "threads": 1}]))


def test_the_report_leaves_out_a_seed_trained_on_another_body_and_says_why(tmp_path):
    root = tmp_path / "runs"
    for k, (noaux, ioupred) in enumerate([(0.50, 0.52), (0.40, 0.47), (0.45, 0.46)]):
        write_run(root, "paa_noaux", k, noaux, "sha256:old" if k == 1 else "sha256:new")
        write_run(root, "paa_ioupred", k, ioupred, "sha256:new")
    rows = collect("1R", root, "tiny", 3)
    by = {r.config: r for r in rows}
    diffs = paired_differences(by["paa_ioupred"], by["paa_noaux"], "AP")
    assert diffs[1] is None and [round(d, 3) for d in (diffs[0], diffs[2])] == [0.02, 0.01]
    claim = next(c for c in TABLES["1R"].claims if (c.a, c.b) == ("paa_ioupred", "paa_noaux"))
    judged = judge_claim(claim, rows)
    assert len(judged["per_seed"]) == 2  # seed 1 is not in the verdict
    assert judged["pairing"] == {"unpaired": {"1": "pre-trained body sha256:new ≠ sha256:old"}}
    assert comparisons(rows, "paa_ioupred")["paa_noaux"]["pairing"] == {
        "unpaired": {"1": "pre-trained body sha256:old ≠ sha256:new"}
    }
    text = markdown_table("1R", rows, "tiny", 3)
    assert "- paa_ioupred − paa_noaux, seed 1: **left out**, pre-trained body sha256:new ≠ sha256:old" in text
