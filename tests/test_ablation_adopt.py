"""Specifications of ``ablate --adopt``: a finished training stands for a planned (config, seed) only when it
learned the planned weights, and its number is re-measured with the plan's inference settings."""

import json
import shutil

import pytest
import yaml

from paa_toolkit import ablate
from paa_toolkit.ablation.adopt import ADOPTED, adopt, learning_differences, parse_adoption
from paa_toolkit.ablation.grid import build_config, build_plan
from paa_toolkit.ablation.runner import run_state, settings_differences
from paa_toolkit.engine.checkpoint import FINAL_METRICS
from paa_toolkit.engine.config import ConfigError


def _planned(out, config="paa_ioupred", seed=0, table="1R"):
    return next(r for r in build_plan(table, "tiny", seed + 1, out) if r.config.name == config and r.seed == seed)


@pytest.fixture(scope="module")
def trained_with_voting(tmp_path_factory):
    """The reference model of the tables at the tiny budget, trained as a plain grid run with score voting on
    (what ``python -m paa_toolkit.train`` does by default): the weights of ``paa_ioupred``, another test setting."""
    out = tmp_path_factory.mktemp("source")
    args = ["--table", "1R", "--budget", "tiny", "--only", "paa_ioupred", "--out", str(out)]
    assert ablate.main([*args, "--set", "test.score_voting=true"]) == 0
    return out / "tiny" / "paa_ioupred" / "seed0"


def test_adopting_a_run_re_measures_it_with_the_plans_test_settings_and_the_grid_then_skips_it(
    tmp_path, trained_with_voting
):
    run = _planned(tmp_path / "grid")
    metrics = adopt(run, trained_with_voting)
    assert run_state(run.run_dir) == "complete" and settings_differences(run) == {}
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["test"]["score_voting"] is False
    record = json.loads((run.run_dir / ADOPTED).read_text())
    assert record["source"] == str(trained_with_voting.resolve())
    assert record["re_evaluated_with"]["test.score_voting"] is False
    assert json.loads((run.run_dir / FINAL_METRICS).read_text()) == metrics
    # the voting row re-evaluates the adopted checkpoint with voting on: the source's own number comes back
    args = ["--table", "1R", "--budget", "tiny", "--only", "paa_ioupred_voting", "--out", str(tmp_path / "grid")]
    assert ablate.main(args) == 0
    voting = json.loads((tmp_path / "grid" / "tiny" / "paa_ioupred_voting" / "seed0" / FINAL_METRICS).read_text())
    assert voting["AP"] == pytest.approx(json.loads((trained_with_voting / FINAL_METRICS).read_text())["AP"])
    assert "paa_toolkit.train" not in (run.run_dir / "train.log").read_text()  # adopted, never trained again
    data = json.loads((tmp_path / "grid" / "tiny" / "table_1R.json").read_text())
    seeds = {r["config"]: r["seeds"][0] for r in data["rows"]}
    assert seeds["paa_ioupred"]["adopted_from"] == seeds["paa_ioupred_voting"]["adopted_from"] == record["source"]


def test_a_run_that_learned_other_weights_is_refused_naming_the_file_and_the_setting(tmp_path, trained_with_voting):
    source = tmp_path / "k5"
    shutil.copytree(trained_with_voting, source)
    cfg = yaml.safe_load((source / "config.yaml").read_text())
    cfg["assign"]["topk"] = 5
    (source / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = _planned(tmp_path / "grid")
    with pytest.raises(ConfigError, match=r"k5/config.yaml trained other weights than planned — assign.topk = 5"):
        adopt(run, source)
    assert not run.run_dir.exists()


def test_only_bookkeeping_and_inference_settings_may_differ():
    planned = build_config({"seed": 3, "test.score_voting": False, "eval_every": 0})
    trained = build_config({"seed": 3, "test.score_voting": True, "eval_every": 1200, "output_dir": "x"})
    assert learning_differences(trained, planned) == {}
    assert set(learning_differences(build_config({"seed": 4}), planned)) == {"seed"}


def test_unfinished_sources_taken_folders_and_evaluation_rows_are_clear_errors(tmp_path, trained_with_voting):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_with_voting, unfinished)
    (unfinished / FINAL_METRICS).unlink()
    with pytest.raises(ConfigError, match=r"unfinished: no final_metrics.json — only a finished training"):
        adopt(_planned(tmp_path / "grid"), unfinished)
    run = _planned(tmp_path / "grid")
    adopt(run, trained_with_voting)
    with pytest.raises(ConfigError, match=r"paa_ioupred@0: .* is already complete; delete it first"):
        adopt(run, trained_with_voting)
    with pytest.raises(ConfigError, match=r"re-evaluates paa_ioupred; adopt that one"):
        adopt(_planned(tmp_path / "grid", "paa_ioupred_voting"), trained_with_voting)


@pytest.mark.parametrize("text", ["paa_ioupred=runs/x", "paa_ioupred:x=runs/x", "paa_ioupred:3", ":3=runs/x"])
def test_a_malformed_adopt_option_says_what_it_expects(text):
    with pytest.raises(ConfigError, match="CONFIG:SEED=RUN_FOLDER"):
        parse_adoption(text)


def test_the_command_line_refuses_a_seed_the_table_does_not_plan(tmp_path, trained_with_voting, capsys):
    args = ["--table", "1R", "--budget", "tiny", "--out", str(tmp_path), "--report"]
    with pytest.raises(SystemExit):
        ablate.main([*args, "--adopt", f"paa_ioupred:4={trained_with_voting}"])
    assert "plans no paa_ioupred at seed 4" in capsys.readouterr().err
