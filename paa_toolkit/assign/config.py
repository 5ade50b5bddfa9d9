"""The assignment settings: the rule and every registered rule's settings, as one flat dataclass.

    cfg = AssignConfig(rule="c", topk=9)          # the paper's PAA: Fig. 3 (c), K = 9, λ = 1
    cfg = AssignConfig(rule="tal")                # TOOD's task-aligned rule with its own defaults
    assigner = build_assigner(cfg)                # paa_toolkit.assign.build_assigner

``rule`` is the one name of the assignment rule everywhere (config, command line ``--assign.rule``,
assigners, widgets, traces, ablation grids). Each rule module registers itself (:mod:`.registry`) with
a small settings dataclass — the one home of its defaults; :class:`AssignConfig` inherits them all, so
``--assign.<field>`` sets any of them and a run's ``config.yaml`` lists them flat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# the rule modules, in the order their names appear in --help; importing one registers its rules
from . import paa  # noqa: F401  (isort: skip) PAA (a)–(d), FNP, FSR
from . import baselines  # noqa: F401  (isort: skip) ATSS, max-IoU
from . import tal  # noqa: F401  (isort: skip) TOOD's task-aligned assignment
from . import simota  # noqa: F401  (isort: skip) YOLOX's SimOTA
from .boundaries import BOUNDARIES
from .candidates import LOW_QUALITY_POLICIES
from .gmm import GMM_INITS
from .registry import rule_names, settings_classes

#: Every assignment rule, in registration order (the choices of ``--assign.rule``).
RULES = rule_names()
#: The rules that score anchors with the model and fit the GMM of Procedure 1, line 12.
GMM_RULES = BOUNDARIES


@dataclass
class RuleChoice:
    """Which rule assigns the anchors (its settings: the other fields of :class:`AssignConfig`)."""

    rule: str = "c"  # the assignment rule ("c": the paper's PAA, Fig. 3 (c)); each is described below


@dataclass
class AssignConfig(*settings_classes(), RuleChoice):
    """How anchors become positive samples."""


def config_of(assigner: Any) -> AssignConfig:
    """The :class:`AssignConfig` of an assigner (its ``rule`` and ``settings``): what a trace records."""
    return AssignConfig(rule=assigner.rule, **asdict(assigner.settings))


__all__ = ["AssignConfig", "GMM_INITS", "GMM_RULES", "LOW_QUALITY_POLICIES", "RULES", "RuleChoice", "config_of"]
