"""paa_toolkit.course: the notebooks' cached briefly trained detector and the helpers around it."""

from __future__ import annotations

import json

import pytest
import torch

from paa_toolkit import course
from paa_toolkit.engine import presets
from paa_toolkit.engine.config import TrainConfig, validate
from paa_toolkit.engine.run_files import load_trace, read_metrics
from paa_toolkit.model.postprocess import postprocess_detections
from paa_toolkit.widgets.compute import random_snapshot

#: a run of a few seconds: 6 images of 64 px, 2 iterations
TINY = {
    "data.synthetic_num_train": 6,
    "data.synthetic_num_val": 3,
    "data.synthetic_image_size": 64,
    "data.batch_size": 2,
    "model.width": 16,
    "model.num_convs": 1,
    "model.min_size": 64,
    "model.max_size": 64,
    "solver.max_iters": 2,
    "solver.warmup_iters": 1,
    "log_every": 1,
    "eval_batch_size": 3,
    "trace_images": 2,
    "trace_iters": [0, 2],
    "device": "cpu",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("course_cache")
    with pytest.MonkeyPatch.context() as mp:  # the synthetic images go to the cache folder too
        mp.setenv("PAA_TOOLKIT_CACHE", str(cache))
        yield cache, course.briefly_trained_run(True, cache_dir=cache, overrides=TINY)


@pytest.fixture(scope="module")
def tiny_model(tiny_run):
    _, run_dir = tiny_run
    model, state = course.load_run(run_dir)
    _, val = course.run_datasets(state)
    return model, val


def test_fast_setting_is_small_and_full_setting_is_the_bench_recipe_traced():
    fast, full = course.course_config(True), course.course_config(False)
    validate(fast), validate(full)
    assert fast.data.synthetic_num_train <= 64 and fast.data.synthetic_image_size <= 160
    assert fast.solver.max_iters <= 50 and 0 in fast.trace_schedule()
    bench = presets.bench_budget()
    assert (full.model, full.data, full.solver, full.assign) == (bench.model, bench.data, bench.solver, bench.assign)
    assert full.trace_images > 0 and 0 in full.trace_schedule() and full.eval_every == 0
    assert (TrainConfig().solver.bf16, full.solver.bf16) == ("off", "auto")  # the course's speed lever, not the demo's


def test_a_config_field_added_later_keeps_the_cached_runs_names_at_its_default():
    cfg = course.course_config(False)
    assert "backbone_trainable_layers" not in cfg.digest_settings()["model"]
    before = course.config_digest(cfg)
    cfg.model.backbone_trainable_layers = 0
    assert course.config_digest(cfg) != before and cfg.digest_settings()["model"]["backbone_trainable_layers"] == 0


def test_run_folder_is_keyed_by_the_settings_not_by_where_it_is_written(tmp_path):
    a = course.course_config(True)
    b = course.course_config(True, {"output_dir": str(tmp_path), "resume": "auto"})
    c = course.course_config(True, {"solver.max_iters": 7})
    assert course.course_run_dir(a, tmp_path) == course.course_run_dir(b, tmp_path)
    assert course.course_run_dir(a, tmp_path) != course.course_run_dir(c, tmp_path)
    assert course.course_run_dir(a, tmp_path) != course.course_run_dir(course.course_config(False), tmp_path)
    assert course.course_run_dir(a, tmp_path).parent == tmp_path / "course"


def test_first_call_trains_a_complete_run(tiny_run):
    _, run_dir = tiny_run
    assert course.is_complete(run_dir)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["iteration"] == TINY["solver.max_iters"] and "AP" in final
    assert sorted(p.name for p in (run_dir / "trace").iterdir()) == ["iter_000000.pt", "iter_000002.pt"]


def test_second_call_reuses_the_run_without_training(tiny_run, monkeypatch):
    cache, run_dir = tiny_run

    def no_training(*args, **kwargs):
        raise AssertionError("train() called although the run is complete")

    monkeypatch.setattr(course.run_cache, "train", no_training)
    assert course.briefly_trained_run(True, cache_dir=cache, overrides=TINY) == run_dir


def test_interrupted_run_is_finished_on_the_next_call(tiny_run):
    cache, run_dir = tiny_run
    (run_dir / "final_metrics.json").unlink()  # as if killed during the final evaluation
    assert not course.is_complete(run_dir)
    assert course.briefly_trained_run(True, cache_dir=cache, overrides=TINY) == run_dir
    assert course.is_complete(run_dir)
    records = read_metrics(run_dir)
    train_iters = [r["iteration"] for r in records if r["kind"] == "train"]
    assert train_iters == sorted(set(train_iters))  # resumed at the end: no iteration trained twice


def test_a_finished_run_with_traces_of_an_older_version_is_trained_again(tiny_run):
    cache, run_dir = tiny_run
    old = run_dir / "trace" / "iter_000000.pt"
    torch.save({"iteration": 0, "snapshot": random_snapshot(0)}, old)  # pickled objects: the format before 2
    assert not course.is_complete(run_dir)
    assert course.briefly_trained_run(True, cache_dir=cache, overrides=TINY) == run_dir
    assert course.is_complete(run_dir) and load_trace(old)["iteration"] == 0


def test_head_outputs_reproduce_the_models_own_detections(tiny_model):
    model, val = tiny_model
    image, _ = val[0]
    view = course.head_outputs(model, image)
    assert view.scale == (1.0, 1.0) and tuple(view.image.shape) == (3, 64, 64) and view.image.dtype == torch.uint8
    assert view.cls_logits.shape == (view.anchors.boxes.shape[0], model.num_classes)
    assert sum(view.anchors.num_per_level) == view.pred_boxes.shape[0] == view.aux_logits.shape[0]
    with course.post_processing(model, score_thresh=0.005), torch.no_grad():  # 2 iterations: low scores
        ours = postprocess_detections(
            view.cls_logits[None],
            view.pred_boxes[None],
            view.aux_logits[None],
            view.anchors.num_per_level,
            [tuple(view.image.shape[-2:])],
            **model.inference.postprocess_kwargs(model.aux),
        )[0]
        theirs = model([image])[0]
    assert len(theirs["boxes"]) > 0
    assert torch.allclose(ours["boxes"], theirs["boxes"], atol=1e-4)
    assert torch.allclose(ours["scores"], theirs["scores"], atol=1e-6)


def test_detections_from_a_head_view_are_the_models_own_under_every_setting(tiny_model):
    model, val = tiny_model
    image, _ = val[0]
    view = course.head_outputs(model, image)
    for settings in ({"unified_score": False, "score_voting": False}, {"unified_score": True, "score_voting": True}):
        with course.post_processing(model, score_thresh=0.005, **settings), torch.no_grad():
            ours, theirs = course.detections_from_view(model, view), model([image])[0]
        assert len(theirs["boxes"]) > 0 and torch.allclose(ours["boxes"], theirs["boxes"], atol=1e-4)
        assert torch.allclose(ours["scores"], theirs["scores"], atol=1e-6)


def test_head_outputs_rejects_an_image_without_three_channels(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        course.head_outputs(model, torch.zeros(64, 64))


def test_post_processing_changes_settings_inside_and_restores_them_after(tiny_model):
    model, _ = tiny_model
    before = model.inference
    with course.post_processing(model, unified_score=False, score_voting=False):
        assert not model.inference.unified_score and model.inference.score_voting is False
        with torch.no_grad():
            dets = model([torch.rand(3, 64, 64)])[0]
        assert "ious" not in dets  # ranked by classification alone
    assert model.inference == before
    with pytest.raises(RuntimeError), course.post_processing(model, nms_thresh=0.3):
        raise RuntimeError("boom")
    assert model.inference == before


def test_post_processing_rejects_unknown_settings(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match="unknown test-time setting"):
        with course.post_processing(model, voting=True):
            pass


def test_scale_boxes_maps_original_to_resized_pixels():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert torch.equal(course.scale_boxes(boxes, (2.0, 0.5)), torch.tensor([[5.0, 40.0, 15.0, 80.0]]))


# ---- the EM comparison and the exercise checks ------------------------------------------------------------
def test_the_paper_start_stops_early_on_narrow_costs_and_the_converged_fit_separates_them():
    # two clear groups 0.82-1.0 and 1.6-1.68 (a range well below the sigma = 1 of the paper's start)
    costs = torch.tensor([[0.82, 0.85, 0.9, 0.93, 0.95, 1.0, 1.6, 1.62, 1.64, 1.66, 1.68]], dtype=torch.float64)
    fits = course.compare_fits(costs, torch.ones_like(costs, dtype=torch.bool))
    assert int(fits.trained.n_iter[0]) <= 5 and bool(fits.differs[0])
    assert torch.allclose(fits.converged.means[0], torch.tensor([0.908, 1.64], dtype=torch.float64), atol=0.01)
    assert bool(fits.bimodal[0]) and float(fits.d[0]) > course.BIMODAL_D


def test_costs_from_one_gaussian_are_rarely_called_bimodal():
    g = torch.Generator().manual_seed(0)
    costs = torch.randn(300, 45, generator=g, dtype=torch.float64).sort(1).values
    fits = course.compare_fits(costs, torch.ones_like(costs, dtype=torch.bool))
    assert float(fits.bimodal.double().mean()) < 0.06  # D > 2 alone: ~60 %


def test_check_prints_a_hint_when_unanswered_and_raises_on_a_wrong_answer(capsys, monkeypatch):
    monkeypatch.delenv(course.CHECK_SOLUTIONS_ENV, raising=False)
    course.check("Exercise 1", ..., 3, hint="count them")
    assert "not answered yet" in capsys.readouterr().out
    with pytest.raises(course.ExerciseError, match="count them"):
        course.check("Exercise 1", 4, 3, hint="count them")
    course.check("Exercise 1", 3.0001, 3, hint="count them")
    course.check("Exercise 1", torch.tensor([1.0, 2.0]), [1.0, 2.0], hint="")
    course.check("Exercise 1", ["b", "a"], {"a", "b"}, hint="")
    course.check("Exercise 1", 7, lambda a: a > 5, hint="")
    assert capsys.readouterr().out.count("correct") == 4


def test_check_raises_when_unanswered_under_the_solution_check(monkeypatch):
    monkeypatch.setenv(course.CHECK_SOLUTIONS_ENV, "1")
    with pytest.raises(course.ExerciseError, match="injected"):
        course.check("Exercise 2", None, 3, hint="")


def test_expect_asserts_in_the_student_setting_and_only_reports_in_the_fast_one(capsys, monkeypatch):
    monkeypatch.delenv("PAA_FAST", raising=False)
    course.expect(True, "two components")
    with pytest.raises(AssertionError, match="two components"):
        course.expect(False, "two components")
    monkeypatch.setenv("PAA_FAST", "1")
    course.expect(False, "two components")
    assert "not asserted" in capsys.readouterr().out


def test_traced_gts_summarise_a_snapshot_and_gt_fits_reproduce_its_labels():
    from paa_toolkit.widgets.compute import random_snapshot

    snap = random_snapshot(0, topk=4)
    traced = course.traced_gts(snap)
    assert len(traced.image) == int(snap.gt_valid.sum()) and traced.summary()["gts"] == len(traced.image)
    row = snap.diagnostics.for_gt(0)
    fits = course.gt_fits(row["candidate_cost"], snap.settings)
    assert torch.equal(fits["trained"]["labels"], row["candidate_label"])
    assert fits["converged"]["n_iter"] >= fits["trained"]["n_iter"]


@pytest.mark.slow
def test_make_course_finds_the_cached_detector_and_summarises_its_last_trace(course_cache, capsys, monkeypatch):
    """``make course`` (``course.main``) on the detector the notebooks use: nothing retrained, the AP and the
    last trace's bimodality read back (the trace through the safe reader, no unpickling)."""
    monkeypatch.setenv("PAA_TOOLKIT_CACHE", str(course_cache))
    assert course.main(["--cache-dir", str(course_cache)]) == 0
    out = capsys.readouterr().out
    assert "found in the cache, nothing trained" in out
    assert "AP 0." in out and "last trace:" in out and "% have clearly bimodal costs" in out
