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
        ConfigError, match="unknown budget 'huge'; valid choices: small, medium, bench, bench-2x, paper, tiny"
    ):
        presets.budget("huge")
