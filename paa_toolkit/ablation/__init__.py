"""The paper's ablations in miniature (Table 1 left/right, Table 4, baselines): grid, runner, report.

See :mod:`paa_toolkit.ablate` for the command line.
"""
from .grid import RUN_CONFIGS, TABLES, PlannedRun, build_plan
from .report import collect, markdown_table, write_report
from .runner import execute, run_state

__all__ = ["RUN_CONFIGS", "TABLES", "PlannedRun", "build_plan", "collect", "execute",
           "markdown_table", "run_state", "write_report"]
