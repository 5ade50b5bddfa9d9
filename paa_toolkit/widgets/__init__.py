"""ipywidgets explorers for the course notebooks, each one call: :func:`assignment_explorer`,
:func:`gmm_explorer`, :func:`voting_explorer`, :func:`rule_comparison_explorer` (in :mod:`.explorers`;
they need ``ipywidgets``).

What they compute lives in :mod:`.compute` (no ipywidgets needed, exported here too), the figures in
:mod:`paa_toolkit.viz`.
"""

from __future__ import annotations

from typing import Any

from .compute import (
    TraceSource,
    compare_rules,
    gt_candidates,
    load_snapshot,
    nms_then_vote,
    open_source,
    random_snapshot,
    replay_rules,
    snapshot_from_model,
    two_cluster_costs,
)

_EXPLORERS = (
    "AssignmentExplorer",
    "GMMExplorer",
    "RuleComparisonExplorer",
    "VotingExplorer",
    "assignment_explorer",
    "gmm_explorer",
    "rule_comparison_explorer",
    "voting_explorer",
)


def __getattr__(name: str) -> Any:  # import ipywidgets only when an explorer is asked for
    if name in _EXPLORERS:
        from . import explorers

        return getattr(explorers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AssignmentExplorer",
    "GMMExplorer",
    "RuleComparisonExplorer",
    "VotingExplorer",
    "assignment_explorer",
    "gmm_explorer",
    "rule_comparison_explorer",
    "voting_explorer",
    "TraceSource",
    "compare_rules",
    "gt_candidates",
    "load_snapshot",
    "nms_then_vote",
    "open_source",
    "random_snapshot",
    "replay_rules",
    "snapshot_from_model",
    "two_cluster_costs",
]
