"""``ablate --carry``: a grid goes on from a clean checkout. The finished seeds of a committed results file are
not trained again, the report takes them from it (saying so), and a file from another grid is refused."""

import json

import pytest

from paa_toolkit import ablate
from paa_toolkit.ablation.carried import read_carried, still_to_run
from paa_toolkit.ablation.grid import build_plan
from paa_toolkit.ablation.report import collect, markdown_table
from paa_toolkit.engine.checkpoint import FINAL_METRICS
from paa_toolkit.engine.config import ConfigError


def results_file(path, rows, table="1R", budget="tiny", extra=None):
    """A results file as ``ablate --results`` writes it: per row its seeds, each with a state and metrics."""
    data = {"date": "2026-12-01T10:00:00+00:00", "table": table, "budget": budget, "seeds": 2, "set": extra or {}}
    data["rows"] = [{"config": c, "seeds": s} for c, s in rows.items()]
    path.write_text(json.dumps(data))
    return path


def done(ap):
    return {"state": "complete", "AP": ap, "AP50": 0.9, "AP75": 0.5, "wall_s": 100.0}


def test_carried_seeds_are_not_trained_again_but_a_carried_checkpoint_a_reevaluation_needs_is(tmp_path):
    path = results_file(
        tmp_path / "r.json",
        {"paa_noaux": [done(0.5), {"state": "missing"}], "paa_ioupred": [done(0.6)], "paa_ioupred_voting": []},
    )
    carried = read_carried(path, "1R", "tiny", {})
    plan = build_plan("1R", "tiny", 2, tmp_path / "runs", only=["paa_noaux", "paa_ioupred_voting"])
    names = [run.name for run in still_to_run(plan, carried)]
    # paa_ioupred@0 finished in the file, but voting@0 re-evaluates its checkpoint, which is not here
    assert sorted(names) == [
        "paa_ioupred@0",
        "paa_ioupred@1",
        "paa_ioupred_voting@0",
        "paa_ioupred_voting@1",
        "paa_noaux@1",
    ]


def test_the_report_takes_a_seed_from_the_file_only_where_no_run_folder_finished_and_says_so(tmp_path):
    path = results_file(tmp_path / "r.json", {"paa_noaux": [done(0.5), done(0.4)]})
    here = tmp_path / "runs" / "tiny" / "paa_noaux" / "seed1"
    here.mkdir(parents=True)
    (here / FINAL_METRICS).write_text(json.dumps({"AP": 0.45, "AP50": 0.8, "AP75": 0.4}))
    rows = collect("1R", tmp_path / "runs", "tiny", 2, read_carried(path, "1R", "tiny", {}))
    noaux = next(r for r in rows if r.config == "paa_noaux")
    assert [s["AP"] for s in noaux.seeds] == [0.5, 0.45]  # seed 1 finished here: the folder wins
    assert noaux.seeds[0]["carried_from"] == f"{path} (2026-12-01T10:00:00+00:00)"
    assert "carried_from" not in noaux.seeds[1]
    text = markdown_table("1R", rows, "tiny", 2)
    assert f"- {path} (2026-12-01T10:00:00+00:00): paa_noaux@0" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"table": "1L"}, "field 'table' is '1L', this grid's is '1R'"),
        ({"budget": "small"}, "field 'budget' is 'small', this grid's is 'tiny'"),
        ({"extra": {"assign.topk": "5"}}, "field 'set' is {'assign.topk': '5'}, this grid's is {}"),
    ],
)
def test_a_file_from_another_grid_is_refused_naming_the_field_and_its_value(tmp_path, change, message):
    path = results_file(tmp_path / "r.json", {"paa_noaux": [done(0.5)]}, **change)
    with pytest.raises(ConfigError, match=f"--carry {path}: {message}".replace("{", r"\{").replace("(", r"\(")):
        read_carried(path, "1R", "tiny", {})


def test_bookkeeping_settings_do_not_make_another_grid(tmp_path):
    path = results_file(tmp_path / "r.json", {"paa_noaux": [done(0.5)]}, extra={"eval_every": "300"})
    assert read_carried(path, "1R", "tiny", {"eval_every": "0", "log_every": "10"}).seed("paa_noaux", 0)["AP"] == 0.5


def test_a_missing_or_malformed_file_is_one_clear_line_on_the_command_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"table": "1R", "budget": "tiny", "rows": [{"seeds": []}]}')
    for path, message in ((tmp_path / "none.json", "no such file"), (bad, "rows[0] has no 'config' name")):
        with pytest.raises(SystemExit):
            ablate.main(["--table", "1R", "--budget", "tiny", "--carry", str(path), "--list"])
        assert f"--carry {path}: {message}" in capsys.readouterr().err


def test_list_marks_carried_runs(tmp_path, capsys):
    path = results_file(tmp_path / "r.json", {"paa_noaux": [done(0.5)]})
    args = ["--table", "1R", "--budget", "tiny", "--seeds", "2", "--out", str(tmp_path / "runs"), "--carry", str(path)]
    assert ablate.main([*args, "--only", "paa_noaux", "--list"]) == 0
    assert capsys.readouterr().out == "paa_noaux\tcarried, missing\n"


def test_train_seeds_trains_a_new_seed_block_of_a_few_rows_and_names_a_seed_out_of_range(tmp_path, capsys):
    path = results_file(tmp_path / "r.json", {"paa_noaux": [done(0.5), done(0.4)], "paa_ioupred": [done(0.6)] * 2})
    args = ["--table", "1R", "--budget", "tiny", "--seeds", "3", "--out", str(tmp_path / "runs"), "--carry", str(path)]
    assert ablate.main([*args, "--only", "paa_noaux", "paa_ioupred", "--train-seeds", "2", "--list"]) == 0
    assert capsys.readouterr().out == "paa_noaux\tmissing\npaa_ioupred\tmissing\n"
    with pytest.raises(SystemExit):
        ablate.main([*args, "--train-seeds", "3", "--list"])
    assert "--train-seeds 3: not among the seeds 0..2" in capsys.readouterr().err
