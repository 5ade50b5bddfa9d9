"""The paper's ablations in miniature (Table 1 left/right, Table 4, baselines): grid, runner, report.

See :mod:`paa_toolkit.ablate` for the command line.
"""

from .grid import RUN_CONFIGS, TABLES, PlannedRun, build_plan, to_argv
from .report import (
    EQUIVALENCE_MARGIN,
    collect,
    confidence_interval,
    format_claims,
    judge_claim,
    markdown_table,
    seeds_needed,
    verdict,
    write_report,
)
from .results import Comparison, TableResult, compare, load_table, markdown, read_table
from .runner import execute, run_state

__all__ = [
    "EQUIVALENCE_MARGIN",
    "RUN_CONFIGS",
    "TABLES",
    "Comparison",
    "PlannedRun",
    "TableResult",
    "build_plan",
    "collect",
    "compare",
    "confidence_interval",
    "execute",
    "format_claims",
    "judge_claim",
    "load_table",
    "markdown",
    "markdown_table",
    "read_table",
    "run_state",
    "seeds_needed",
    "to_argv",
    "verdict",
    "write_report",
]
