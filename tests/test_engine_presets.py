"""Specifications of the named settings: the demo is the defaults, every budget is a valid config."""

import pytest

from paa_toolkit.ablation.grid import budget_overrides
from paa_toolkit.engine import presets
from paa_toolkit.engine.config import ConfigError, TrainConfig, set_field, validate


def test_the_demo_is_the_defaults():
    assert presets.demo() == TrainConfig()


def test_every_budget_validates_and_the_paper_budget_only_lacks_the_coco_folder(tmp_path):
    for name in ("small", "medium", "tiny"):
        validate(presets.budget(name))
    paper = presets.budget("paper")
    with pytest.raises(ConfigError, match="data.dataset 'coco' needs data.root"):
        validate(paper)
    paper.data.root = str(tmp_path)
    validate(paper)


def test_a_budget_as_dotted_overrides_rebuilds_the_preset():
    for name in presets.BUDGETS:
        cfg = TrainConfig()
        for key, value in budget_overrides(name).items():
            set_field(cfg, key, value)
        assert cfg == presets.budget(name), name


def test_an_unknown_budget_names_the_choices():
    with pytest.raises(
        ConfigError,
        match="unknown budget 'huge'; valid choices: small, medium, bench, bench-2x, bench-pretrained, "
        "bench-pretrained-2x, bench-pretrained-4x, bench-pretrained-8x, bench-pretrained-atss, paper, tiny",
    ):
        presets.budget("huge")


def test_the_pretrained_bench_is_the_bench_from_a_detection_pretrained_backbone_and_its_check_twice_as_long():
    bench, pretrained, longer = (
        presets.budget("bench"),
        presets.budget("bench-pretrained"),
        presets.budget("bench-pretrained-2x"),
    )
    assert pretrained.model.backbone_pretrain == "detection" and bench.model.backbone_pretrain == "none"
    pretrained.model.backbone_pretrain = "none"
    assert pretrained == bench  # nothing else changes
    assert (longer.solver.max_iters, longer.eval_every) == (2 * bench.solver.max_iters, 2 * bench.eval_every)
    assert longer.solver.step_fractions == bench.solver.step_fractions  # the lr steps at the same fractions
    for name, times in (("bench-pretrained-4x", 4), ("bench-pretrained-8x", 8)):
        longer = presets.budget(name)
        assert (longer.solver.max_iters, longer.eval_every) == (
            times * bench.solver.max_iters,
            times * bench.eval_every,
        )
        longer.solver.max_iters, longer.eval_every = bench.solver.max_iters, bench.eval_every
        assert longer == presets.budget("bench-pretrained")  # the length is all that changes
