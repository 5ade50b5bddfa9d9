"""One switch for the assignment rule: :func:`build_assigner` asks the registry (:mod:`.registry`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .base import Assigner
from .config import AssignConfig
from .registry import get_rule, settings_problems


def build_assigner(cfg: AssignConfig | None = None, **changes: Any) -> Assigner:
    """The assigner of ``cfg.rule`` (∈ :data:`~.config.RULES`) with ``cfg``'s settings.

    Args:
        cfg: the assignment settings (default: :class:`~.config.AssignConfig`, the paper's).
        **changes: fields of ``cfg`` to override (``build_assigner(rule="atss")``).

    Returns:
        An :class:`~.base.Assigner`: the registered rule's (:mod:`.registry`), e.g. :class:`~.paa.PAAAssigner`,
        :class:`~.baselines.ATSSAssigner`, :class:`~.tal.TALAssigner` or :class:`~.simota.SimOTAAssigner`.

    Raises:
        ValueError: an unknown rule or a bad setting, named.
    """
    cfg = replace(cfg or AssignConfig(), **changes)
    rule = get_rule(cfg.rule)
    problems = settings_problems(cfg)
    if problems:
        raise ValueError("; ".join(problems))
    return rule.build(cfg)


__all__ = ["build_assigner"]
