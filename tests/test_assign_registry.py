"""The registry of assignment rules (assign/registry.py): one table that validation, --help, build_assigner,
the replay and the explorers ask; a rule is one registered module."""

import dataclasses
import re
from pathlib import Path

import pytest

import paa_toolkit
from paa_toolkit.assign import RULES, AssignConfig, PAAAssigner, build_assigner, config_of, get_rule, rules
from paa_toolkit.assign.registry import Rule, register
from paa_toolkit.engine.config import ConfigError, TrainConfig, field_docs, set_field, validate

#: the modules that register rules (and boundaries.py, the home of PAA's separation names, Procedure 1
#: line 13): the only places a rule's name may be compared in code
RULE_MODULES = {"paa.py", "boundaries.py", "baselines.py", "tal.py", "simota.py"}


def test_every_registered_rule_builds_an_assigner_that_records_its_own_name_and_settings():
    assert RULES == tuple(rule.name for rule in rules())
    assert RULES == ("a", "b", "c", "d", "fnp", "fsr", "atss", "max_iou", "tal", "simota")
    for name in RULES:
        cfg = AssignConfig(rule=name, topk=5, tal_topk=7, simota_candidate_topk=4)
        assigner = build_assigner(cfg)
        assert assigner.rule == name
        recorded = config_of(assigner)
        assert recorded.rule == name
        for field in get_rule(name).uses:  # what the rule reads is what its trace records
            assert getattr(recorded, field) == getattr(cfg, field), (name, field)


def test_assign_config_is_the_union_of_the_registered_settings_each_field_documented():
    names = [f.name for f in dataclasses.fields(AssignConfig)]
    assert names[:2] == ["rule", "topk"] and len(names) == len(set(names))
    for rule in rules():
        assert {f.name for f in dataclasses.fields(rule.settings)} <= set(names), rule.name
    docs = field_docs(AssignConfig)
    assert not [n for n in names if not docs.get(n)], "every setting needs a # comment for --help"


def test_a_name_registered_twice_or_a_setting_declared_twice_is_refused():
    @dataclasses.dataclass
    class Clash:
        tal_alpha: float = 0.5  # the same flat name as TAL's

    with pytest.raises(ValueError, match="registered twice"):
        register(Rule("tal", "x", "x", Clash, lambda cfg: None))
    with pytest.raises(ValueError, match="'tal_alpha' is already declared by TALSettings"):
        register(Rule("clash", "x", "x", Clash, lambda cfg: None))
    assert "clash" not in RULES and "clash" not in [r.name for r in rules()]


def test_validation_asks_each_rules_settings_and_the_assigners_agree_with_it():
    for field, value, message in [
        ("gmm_max_iter", "0", "assign.gmm_max_iter must be >= 1, got 0"),
        ("tal_topk", "0", "assign.tal_topk (m) must be >= 1, got 0"),
        ("simota_center_radius", "0", "assign.simota_center_radius must be > 0, got 0.0"),
    ]:
        cfg = TrainConfig()
        set_field(cfg, f"assign.{field}", value)
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(cfg)
    with pytest.raises(ValueError, match="gmm_max_iter must be >= 1, got 0"):  # once ≥ 0 here, ≥ 1 there
        PAAAssigner(gmm_max_iter=0)
    with pytest.raises(ValueError, match="gmm_max_iter must be >= 1"):
        build_assigner(rule="atss", gmm_max_iter=0)


def test_no_module_outside_the_rule_modules_compares_a_rules_name():
    root = Path(paa_toolkit.__file__).parent
    names = "|".join(re.escape(n) for n in RULES)
    compare = re.compile(rf"""rule\w*\s*(==|!=|\bin\b|\bnot in\b)\s*\(?\s*["']({names})["']""")
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if not (path.parent.name == "assign" and path.name in RULE_MODULES)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if compare.search(line)
    ]
    assert offenders == []
