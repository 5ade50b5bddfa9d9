"""The paper's ablations in miniature (Table 1 left/right, Table 4, baselines): grid, runner, report.

See :mod:`paa_toolkit.ablate` for the command line.
"""
from .grid import RUN_CONFIGS, TABLES, PlannedRun, build_plan, to_argv
from .report import collect, markdown_table, write_report
from .results import Comparison, TableResult, compare, load_table, markdown, read_table
from .runner import execute, run_state

__all__ = ["RUN_CONFIGS", "TABLES", "Comparison", "PlannedRun", "TableResult", "build_plan", "collect", "compare",
           "execute", "load_table", "markdown", "markdown_table", "read_table", "run_state", "to_argv", "write_report"]
