"""The ablation grids of the paper (Table 1 left/right, Table 4, baselines) as plain data.

A *run config* is a named set of config overrides (``--section.field VALUE``) on top of a budget
(a typed preset of :mod:`paa_toolkit.engine.presets`, taken as the overrides it makes: :func:`budget_overrides`);
a *table* is a list of rows, each row pointing at one run config. Identical settings share one
name, so one training serves every table that needs it (Fig. 3 (c) of Table 1 left, K = 9 and
anchor scale 8 of Table 4 and "PAA + IoU pred." of Table 1 right are the same run)::

    plan = build_plan("1R", budget="small", seeds=2, out="runs/ablations")
    [p.name for p in plan]        # ['iou_assign@0', 'iou_assign@1', 'iou_assign_ioupred@0', ...]

The reference row of every table is the paper's model without score voting (§4.1, Table 1 right
row 5: PAA, IoU prediction); "+ score voting" (§3.3) changes inference only, so that row
re-evaluates the reference checkpoint with voting on (a paired comparison, no second training).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cli import dotted_overrides
from ..engine import presets
from ..engine.config import ConfigError, TrainConfig, set_field, validate


# ---- run configs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One trained (or re-evaluated) model; ``overrides`` apply on top of the reference model."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    evaluate_from: str | None = None  # re-evaluate this run config's checkpoint with ``overrides``


#: The reference model of the ablations: PAA, IoU prediction, Fig. 3 (c), K = 9, scale 8, no voting.
REFERENCE: dict[str, Any] = {
    "model.arch": "paa",
    "assign.rule": "c",
    "model.aux": "iou",
    "assign.topk": 9,
    "model.anchor_scale": 8.0,
    "test.score_voting": False,
}


def _configs() -> dict[str, RunConfig]:
    c = [
        RunConfig("iou_assign", {"assign.rule": "max_iou", "model.aux": "none"}),
        RunConfig("iou_assign_ioupred", {"assign.rule": "max_iou"}),
        RunConfig("paa_noaux", {"model.aux": "none"}),
        RunConfig("paa_centerness", {"model.aux": "centerness"}),
        RunConfig("paa_ioupred", {}),
        RunConfig("paa_ioupred_voting", {"test.score_voting": True}, evaluate_from="paa_ioupred"),
        RunConfig("atss_centerness", {"assign.rule": "atss", "model.aux": "centerness"}),
        RunConfig("atss_ioupred", {"assign.rule": "atss"}),
        *(RunConfig(f"boundary_{b}", {"assign.rule": b}) for b in "abd"),
        *(RunConfig(f"fnp_{n}", {"assign.rule": "fnp", "assign.fnp_num": n}) for n in (5, 10, 20)),
        *(RunConfig(f"fsr_{t}", {"assign.rule": "fsr", "assign.fsr_thresh": t}) for t in (0.1, 0.2, 0.3)),
        *(RunConfig(f"topk_{k}", {"assign.topk": k}) for k in (5, 18, 25)),
        *(RunConfig(f"anchor_scale_{s}", {"model.anchor_scale": float(s)}) for s in (4, 6, 10)),
        RunConfig("paa_gt_match", {"assign.low_quality": "gt"}),
        RunConfig("paa_data_init", {"assign.gmm_init": "data"}),
        RunConfig("paa_gt_match_data_init", {"assign.low_quality": "gt", "assign.gmm_init": "data"}),
        # PAA's successors (issue 20): with PAA's head and loss (hard targets), then with their own soft targets
        RunConfig("tal_ioupred", {"assign.rule": "tal", "assign.tal_soft_target": False}),
        RunConfig("simota_ioupred", {"assign.rule": "simota", "assign.simota_soft_target": False}),
        RunConfig("tal_soft", {"assign.rule": "tal", "assign.tal_soft_target": True}),
        RunConfig("simota_soft", {"assign.rule": "simota", "assign.simota_soft_target": True}),
        RunConfig("fcos", {"model.arch": "fcos"}),
        RunConfig("retinanet", {"model.arch": "retinanet"}),
    ]
    return {rc.name: rc for rc in c}


RUN_CONFIGS: dict[str, RunConfig] = _configs()


# ---- tables ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of a paper table: its label cells, the run config it shows, the paper's AP/AP50/AP75 (%)."""

    cells: tuple[str, ...]
    config: str
    paper: tuple[float, float, float] | str | None = None


#: the report's columns of every table: COCO AP, AP50, AP75 (fractions)
AP_COLUMNS = ("AP", "AP50", "AP75")
#: the analysis table's columns (issue 9): COCO metrics, recall of small GTs at IoU 0.5 (final evaluation) and
#: the assignment diagnostics of the training log (mean over its train records; assign.stats.LOG_KEYS)
ANALYSIS_COLUMNS = (
    *AP_COLUMNS,
    "APs",
    "APm",
    "APl",
    "recall50_small",
    "gt_without_pos",
    "gt_without_pos_small",
    "em_iters",
    "em_collapsed",
    "pos_per_gt",
)

#: the successors table's columns (issue 20): COCO metrics, small-GT recall and the assignment figures every rule has
SUCCESSOR_COLUMNS = (
    *AP_COLUMNS,
    "APs",
    "APm",
    "APl",
    "recall50_small",
    "gt_without_pos",
    "gt_without_pos_small",
    "pos_per_gt",
)


@dataclass(frozen=True)
class Claim:
    """One of the paper's statements about a table, checked seed by seed: ``a`` beats ``b`` (``kind``
    "higher", the paper's ordering, ``paper`` its AP gap in points) or ``a`` and ``b`` are the same within
    the equivalence margin (``kind`` "equivalent": the robustness claims)."""

    a: str
    b: str
    kind: str  # "higher" or "equivalent"
    paper: float | str | None = None  # the paper's AP(a) − AP(b), points
    b_label: str | None = None  # b's name here, where its row has several (Table 4's reference: K = 9, scale 8)


def _equal(configs: tuple[str, ...], to: str = "paa_ioupred", as_label: str | None = None) -> tuple[Claim, ...]:
    return tuple(Claim(c, to, "equivalent", b_label=as_label) for c in configs)


@dataclass(frozen=True)
class Table:
    """A paper table: its rows by section; ``columns`` the report shows (metrics of final_metrics.json or
    figures of the training log); ``reference``: the row config every other row is compared with, seed
    by seed (paired differences and a verdict, :func:`~.report.verdict`)."""

    key: str
    title: str
    label_columns: tuple[str, ...]
    sections: tuple[tuple[str, tuple[Row, ...]], ...]  # (sub-table caption, rows)
    columns: tuple[str, ...] = AP_COLUMNS
    reference: str | None = None
    claims: tuple[Claim, ...] = ()  # the paper's statements about the table (paired verdicts in the report)

    @property
    def rows(self) -> list[Row]:
        return [row for _, rows in self.sections for row in rows]

    def config_names(self) -> list[str]:
        """The run configs the table needs, in row order, each once (dependencies first)."""
        names: list[str] = []
        for row in self.rows:
            base = RUN_CONFIGS[row.config].evaluate_from
            for name in ([base] if base else []) + [row.config]:
                if name not in names:
                    names.append(name)
        return names


TABLES: dict[str, Table] = {
    "1L": Table(
        "1L",
        "Table 1 left: anchor separation boundaries (Fig. 3), FNP and FSR",
        ("Anchor Sep.",),
        (
            (
                "",
                (
                    Row(("Fig. 3 (a)",), "boundary_a", (40.5, 58.8, 43.4)),
                    Row(("Fig. 3 (b)",), "boundary_b", (40.8, 59.1, 44.0)),
                    Row(("Fig. 3 (c)",), "paa_ioupred", (40.6, 58.8, 43.7)),
                    Row(("Fig. 3 (d)",), "boundary_d", (40.7, 59.1, 44.0)),
                    Row(("FNP (5)",), "fnp_5", (39.5, 58.0, 42.7)),
                    Row(("FNP (10)",), "fnp_10", (40.1, 58.5, 43.3)),
                    Row(("FNP (20)",), "fnp_20", (40.0, 58.5, 43.1)),
                    Row(("FSR (> 0.1)",), "fsr_0.1", (23.8, 38.0, 23.2)),
                    Row(("FSR (> 0.2)",), "fsr_0.2", (19.3, 33.2, 19.8)),
                    Row(("FSR (> 0.3)",), "fsr_0.3", "training failed"),
                ),
            ),
        ),
        reference="paa_ioupred",
        claims=(
            *_equal(("boundary_a", "boundary_b", "boundary_d")),  # §4.1: "robust to the choice of boundary"
            Claim("paa_ioupred", "fnp_5", "higher", 1.1),
            Claim("paa_ioupred", "fnp_10", "higher", 0.5),
            Claim("paa_ioupred", "fnp_20", "higher", 0.6),
            Claim("paa_ioupred", "fsr_0.1", "higher", 16.8),
            Claim("paa_ioupred", "fsr_0.2", "higher", 21.3),
            Claim("paa_ioupred", "fsr_0.3", "higher", "training failed"),
        ),
    ),
    "1R": Table(
        "1R",
        "Table 1 right: effects of individual methods",
        ("Method", "Aux. task", "Voting"),
        (
            (
                "",
                (
                    Row(("IoU", "", ""), "iou_assign", (34.6, 53.0, 36.7)),
                    Row(("IoU", "IoU pred.", ""), "iou_assign_ioupred", (36.0, 54.0, 38.9)),
                    Row(("PAA", "", ""), "paa_noaux", (39.9, 59.1, 42.8)),
                    Row(("PAA", "Center pred.", ""), "paa_centerness", (39.8, 58.3, 43.2)),
                    Row(("PAA", "IoU pred.", ""), "paa_ioupred", (40.8, 59.1, 44.0)),
                    Row(("PAA", "IoU pred.", "✓"), "paa_ioupred_voting", (41.0, 59.1, 44.4)),
                    Row(("ATSS", "Center pred.", ""), "atss_centerness", (39.4, 57.4, 42.4)),
                    Row(("ATSS", "IoU pred.", ""), "atss_ioupred", (39.8, 57.9, 43.2)),
                ),
            ),
        ),
        reference="paa_ioupred",
        claims=(
            Claim("paa_noaux", "iou_assign", "higher", 5.3),  # PAA vs IoU-threshold assignment
            Claim("iou_assign_ioupred", "iou_assign", "higher", 1.4),
            Claim("paa_ioupred", "paa_noaux", "higher", 0.9),  # IoU prediction (§3.2)
            Claim("paa_ioupred", "paa_centerness", "higher", 1.0),  # IoU prediction vs centerness
            Claim("paa_ioupred_voting", "paa_ioupred", "higher", 0.2),  # score voting (§3.3)
            Claim("paa_ioupred", "atss_ioupred", "higher", 1.0),  # PAA vs ATSS, same head
            Claim("atss_ioupred", "atss_centerness", "higher", 0.4),
        ),
    ),
    "4": Table(
        "4",
        "Table 4: top-K of Procedure 1 and the default anchor scale",
        ("Setting",),
        (
            (
                "Left: topk K",
                (
                    Row(("K = 5",), "topk_5", (40.5, 58.9, 43.5)),
                    Row(("K = 9",), "paa_ioupred", (40.8, 59.1, 44.0)),
                    Row(("K = 18",), "topk_18", (40.4, 58.7, 43.5)),
                    Row(("K = 25",), "topk_25", (40.7, 58.9, 43.9)),
                ),
            ),
            (
                "Right: default anchor scale",
                (
                    Row(("scale 4",), "anchor_scale_4", (40.8, 59.9, 44.0)),
                    Row(("scale 6",), "anchor_scale_6", (40.7, 59.5, 43.8)),
                    Row(("scale 8",), "paa_ioupred", (40.8, 59.1, 44.0)),
                    Row(("scale 10",), "anchor_scale_10", (40.8, 59.3, 43.9)),
                ),
            ),
        ),
        reference="paa_ioupred",
        claims=(
            *_equal(("topk_5", "topk_18", "topk_25"), as_label="K = 9"),
            *_equal(("anchor_scale_4", "anchor_scale_6", "anchor_scale_10"), as_label="scale 8"),
        ),
    ),  # §4.1: robust to K and the anchor scale
    "baselines": Table(
        "baselines",
        "Baselines: our PAA vs torchvision FCOS and RetinaNet, same loop, data, budget and backbone",
        ("Detector",),
        (
            (
                "",
                (
                    Row(("PAA (IoU pred. + score voting)",), "paa_ioupred_voting", None),
                    Row(("PAA (IoU pred., no voting)",), "paa_ioupred", None),
                    Row(("torchvision FCOS",), "fcos", None),
                    Row(("torchvision RetinaNet",), "retinanet", None),
                ),
            ),
        ),
        reference="paa_ioupred",
        claims=(
            Claim("paa_ioupred", "fcos", "higher"),
            Claim("paa_ioupred", "retinanet", "higher"),
        ),
    ),
    "analysis": Table(
        "analysis",
        "Issue 9: the two remedies of PAA's assignment (gt matching, data-init EM) "
        "against PAA (reference), ATSS and FCOS",
        ("Method",),
        (
            (
                "",
                (
                    Row(("PAA (reference)",), "paa_ioupred", None),
                    Row(("PAA + gt matching",), "paa_gt_match", None),
                    Row(("PAA + data-init EM",), "paa_data_init", None),
                    Row(("PAA + both",), "paa_gt_match_data_init", None),
                    Row(("ATSS",), "atss_ioupred", None),
                    Row(("torchvision FCOS",), "fcos", None),
                ),
            ),
        ),
        columns=ANALYSIS_COLUMNS,
        reference="paa_ioupred",
    ),
    "successors": Table(
        "successors",
        "After PAA (issue 20): ATSS, TOOD's TAL and YOLOX's SimOTA against PAA, "
        "the same head (IoU prediction) and budget; mmdetection's ResNet-50 1x COCO AP: ATSS 39.4, "
        "PAA 40.4, TOOD 42.4 (with its T-head, not the assigner alone)",
        ("Assignment", "Class target"),
        (
            (
                "Same head and loss: focal loss on hard 0/1 class targets",
                (
                    Row(("PAA (reference)", "hard"), "paa_ioupred", None),
                    Row(("ATSS", "hard"), "atss_ioupred", None),
                    Row(("TAL (TOOD)", "hard"), "tal_ioupred", None),
                    Row(("SimOTA (YOLOX)", "hard"), "simota_ioupred", None),
                ),
            ),
            (
                "Their own soft targets: quality focal loss",
                (
                    Row(("TAL (TOOD)", "t normalised"), "tal_soft", None),
                    Row(("SimOTA (YOLOX)", "IoU"), "simota_soft", None),
                ),
            ),
        ),
        columns=SUCCESSOR_COLUMNS,
        reference="paa_ioupred",
    ),
}


# ---- the plan: (config, seed) → folder and overrides ------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    seed: int
    run_dir: Path
    overrides: dict[str, Any]  # everything passed to the training (budget < reference < row < --set)
    base_dir: Path | None = None  # evaluate-only runs: the trained run folder to re-evaluate

    @property
    def name(self) -> str:
        return f"{self.config.name}@{self.seed}"


def parse_assignment(text: str) -> tuple[str, str]:
    """``"data.root=/data/coco"`` → ``("data.root", "/data/coco")`` (the ``--set`` option)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. data.root=/data/coco), got {text!r}")
    return key.strip(), value


def budget_overrides(budget: str) -> dict[str, Any]:
    """The budget (:func:`~..engine.presets.budget`) as overrides of the defaults, by dotted name."""
    return dotted_overrides(presets.budget(budget))


def resolve_overrides(config: RunConfig, budget: str, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    merged = {**budget_overrides(budget), **REFERENCE, **config.overrides, **(extra or {}), "seed": seed}
    if merged.get("model.arch", "paa") != "paa":  # torchvision baselines: their own post-processing
        merged.pop("test.score_voting", None)
    return merged


def build_config(overrides: dict[str, Any]) -> TrainConfig:
    """The validated :class:`TrainConfig` a run will train with (raises :class:`ConfigError`)."""
    cfg = TrainConfig()
    for key, value in overrides.items():
        set_field(cfg, key, value)
    return validate(cfg)


def build_plan(
    table: str,
    budget: str = "small",
    seeds: int = 1,
    out: str | Path = "runs/ablations",
    only: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[PlannedRun]:
    """Every run a table needs.

    Args:
        table: the table's name (:data:`TABLES`: ``"1L"``, ``"1R"``, ``"4"``, ``"baselines"``, ...).
        budget: the training budget (``"small"``, ``"medium"``, ...; :mod:`paa_toolkit.engine.presets`).
        seeds: runs per row.
        out: the folder the runs go to (``<out>/<budget>/<config>/seed<k>``).
        only: restrict to these config names (plus the runs they re-evaluate).
        extra: overrides added to every run.

    Returns:
        One :class:`PlannedRun` per (config, seed), its settings validated.

    Raises:
        ConfigError: an unknown table or config, or settings that do not validate.
    """
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; valid choices: {', '.join(TABLES)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    names = TABLES[table].config_names()
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only: {', '.join(unknown)} not in table {table}; its configs: {', '.join(names)}")
        wanted = set(only) | {RUN_CONFIGS[n].evaluate_from for n in only if RUN_CONFIGS[n].evaluate_from}
        names = [n for n in names if n in wanted]
    root = Path(out) / budget
    plan = []
    for name in names:
        config = RUN_CONFIGS[name]
        for seed in range(seeds):
            base = RUN_CONFIGS[config.evaluate_from] if config.evaluate_from else None
            overrides = resolve_overrides(base or config, budget, seed, extra)
            if base:
                overrides.update(config.overrides)
            build_config(overrides)  # fail before anything runs
            plan.append(
                PlannedRun(
                    config,
                    seed,
                    root / name / f"seed{seed}",
                    overrides,
                    root / base.name / f"seed{seed}" if base else None,
                )
            )
    return plan


def to_argv(overrides: dict[str, Any]) -> list[str]:
    """Overrides as arguments of ``python -m paa_toolkit.train``.

    Args:
        overrides: ``{"section.field": value}``.

    Returns:
        ``["--section.field", "VALUE", ...]``.
    """
    argv = []
    for key, value in overrides.items():
        text = json.dumps(value) if isinstance(value, list) else ("none" if value is None else str(value))
        argv += [f"--{key}", text]
    return argv


__all__ = [
    "ANALYSIS_COLUMNS",
    "AP_COLUMNS",
    "REFERENCE",
    "RUN_CONFIGS",
    "SUCCESSOR_COLUMNS",
    "TABLES",
    "Claim",
    "PlannedRun",
    "Row",
    "RunConfig",
    "Table",
    "budget_overrides",
    "build_config",
    "build_plan",
    "parse_assignment",
    "resolve_overrides",
    "to_argv",
]
