"""The real-curve tables of benchmarks/hpo.py: lookup semantics and the committed tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import hpo_problems  # noqa: E402
import hpo_tables  # noqa: E402
from hpo_problems import Meter  # noqa: E402

from lightning_des.tuner.flexhb import PRESETS, FlexHB  # noqa: E402
from lightning_des.tuner.space import SearchSpace  # noqa: E402


@pytest.fixture
def small_table(tmp_path, monkeypatch):
    """Three hand-made curves over a 1-parameter log space and a categorical."""
    spec = {"lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}, "width": {"type": "categorical", "choices": [4, 8]}}
    rows = [{"config": {"lr": 1e-3, "width": 4}, "curve": [0.9, 0.8, 0.7], "seconds": 1.0},
            {"config": {"lr": 1e-1, "width": 4}, "curve": [0.5, 0.6, 0.65], "seconds": 1.0},
            {"config": {"lr": 1e-2, "width": 8}, "curve": [0.95, 0.7, float("nan")], "seconds": 1.0}]
    (tmp_path / "toy.json").write_text(json.dumps({"name": "toy", "spec": spec, "epochs": 3, "rows": rows}))
    monkeypatch.setattr(hpo_tables, "TABLES_DIR", tmp_path)
    return rows


def test_lookup_returns_the_nearest_tabulated_curve(small_table):
    p = hpo_problems.tabular_problem("toy")
    assert (p.min_budget, p.max_budget) == (1, 3)
    assert p.optimum == 0.65  # best finite last-epoch loss; the diverged run (nan) ranks last
    for r in small_table[:2]:
        losses, _ = p.evaluate(r["config"], [1.0, 2.0, 3.0], None)
        assert [losses[b] for b in (1.0, 2.0, 3.0)] == r["curve"]
    # nearest in the encoding: lr 0.05 is log-closer to 0.1 than to 0.001, same width
    losses, _ = p.evaluate({"lr": 0.05, "width": 4}, [2.0], None)
    assert losses == {2.0: 0.6}
    losses, _ = p.evaluate({"lr": 1e-2, "width": 8}, [3.0], None)
    assert losses[3.0] == 1e9  # nan is stored as a huge loss, never as a good one


def test_missing_table_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(hpo_tables, "TABLES_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="hpo_tables.py --table nope"):
        hpo_problems.tabular_problem("nope")


def test_fidelity_correlation_is_spearman_per_epoch(small_table):
    table = json.loads((hpo_tables.TABLES_DIR / "toy.json").read_text())
    rho = hpo_tables.fidelity_correlation(table)
    last = [0.7, 0.65, 1e9]
    for e, col in enumerate(zip(*[r["curve"] for r in small_table]), start=1):
        col = [1e9 if c != c else c for c in col]
        assert rho[e] == pytest.approx(spearmanr(col, last).statistic)


@pytest.mark.parametrize("name", ["digits-mlp", "deepfm-ml100k", "wdl-ml100k"])
def test_committed_tables_are_whole(name):
    """Every committed table has its space's configurations in draw order, one finite-or-nan
    loss per epoch, and its rebuild command."""
    t = hpo_tables.load(name)
    spec = hpo_tables.TABLES[name]
    assert t["spec"] == spec["spec"] and t["epochs"] == spec["epochs"]
    assert len(t["rows"]) >= 100 and t["command"].endswith(f"--configs {len(t['rows'])}")
    space = SearchSpace.from_dict(t["spec"])
    for i in (0, len(t["rows"]) - 1):
        drawn = hpo_tables.draw(space, i)
        assert drawn.keys() == t["rows"][i]["config"].keys()
        assert np.allclose([float(drawn[k]) for k in drawn], [float(t["rows"][i]["config"][k]) for k in drawn])
    assert all(len(r["curve"]) == t["epochs"] for r in t["rows"])


def test_flexhb_runs_on_a_table_within_the_meter(small_table):
    """A tuner driven by benchmarks/hpo.py's loop on a table stops at the budget and its best
    full-fidelity loss is a tabulated last-epoch loss."""
    import hpo

    p = hpo_problems.tabular_problem("toy")
    meter = Meter(4.0, p.max_budget)
    t = hpo.run_ours(p, "flexhb", 0, meter)
    assert len(t.trials) > 0 and meter.used >= 4.0
    assert meter.best in {0.7, 0.65, 1e9}


def test_across_problems_ranks_and_win_shares_by_hand():
    """Mean rank over problems weighs each problem equally; the win share counts ties half."""
    import hpo

    rows = [{"problem": p, "method": m, "seed": s, "final": v} for p, m, s, v in [
        ("a", "flexhb", 0, 1.0), ("a", "x", 0, 2.0), ("a", "flexhb", 1, 3.0), ("a", "x", 1, 2.0),
        ("b", "flexhb", 0, 1.0), ("b", "x", 0, 1.0), ("b", "y", 0, 5.0),
        ("c", "flexhb", 0, 1.0), ("c", "flexhb", 1, 1.0), ("c", "x", 0, 9.0)]]
    # "y" ran only on b: with it, only b counts; without it, a and b count; c is unfinished
    # (x lacks seed 1) and never counts
    text = hpo.across_problems(rows, ["flexhb", "x"], n_boot=50)
    assert "Over 2 problems (a, b)" in text
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in text.splitlines() if ln.startswith("| ")}
    # ranks: a = (1, 2), (2, 1) -> 1.5 each; b = tie -> 1.5 each
    assert lines["flexhb"].split(" | ")[1].startswith("1.50") and lines["x"].split(" | ")[1].startswith("1.50")
    # wins of flexhb over x: a 1 of 2, b a tie -> (0.5 + 0.5) / 2
    assert lines["x"].split(" | ")[2].startswith("0.50")
    text = hpo.across_problems(rows, ["flexhb", "x", "y"], n_boot=50)
    assert "Over 1 problems (b)" in text
    assert "| flexhb | 1.50" in text and "| y | 3.00" in text
    assert hpo.across_problems(rows, ["flexhb", "z"]).startswith("(no problem")


def test_cached_runs_with_other_rung_levels_or_switches_are_stale():
    """A cached run of ours counts only if the rung levels and resolved switches it recorded
    are the tuner's now (Branin 1..27: 1, 3, 9, 27; FlexHB's default resume_paused=False);
    rows of ours without that record are stale, peers' rows are kept."""
    import hpo

    switches = {"mode": "flexhb", "eta": 3, "grain": 1.0, **PRESETS["flexhb"], "group_step": None, "resume_paused": False,
                "resume": True, "random_fraction": 0.2, "rho_threshold": 0.5, "n_candidates": 400}
    row = {"problem": "branin", "method": "flexhb", "seed": 0, "levels": [1.0, 3.0, 9.0, 27.0], "switches": switches}
    assert not hpo._stale(row)
    assert hpo._stale({**row, "levels": [1.0, 3.0, 9.1, 27.0]})
    assert hpo._stale({**row, "switches": {**switches, "resume_paused": True}})
    assert not hpo._stale({**row, "method": "flexhb-glosh-resume", "switches": {**switches, "resume_paused": True}})
    assert hpo._stale({k: v for k, v in row.items() if k != "switches"}) and hpo._stale({k: v for k, v in row.items() if k != "levels"})
    assert not hpo._stale({"problem": "branin", "method": "optuna", "seed": 0, "levels": [2.0]})


def test_cached_runs_on_a_table_that_has_grown_are_stale(small_table, monkeypatch):
    """A run on a ``table:*`` problem counts only if the table still holds as many
    configurations as when it ran (neighbours and optimum change as a table grows); every
    method's row, peers' too, and rows that recorded no size are rerun."""
    import hpo

    hpo._table_configs.cache_clear()  # small_table points hpo_tables at a 3-configuration table
    p = hpo_problems.tabular_problem("toy")
    toy_tuner = FlexHB(p.space, p.min_budget, p.max_budget, eta=3, **hpo.OURS["random"])
    monkeypatch.setattr(hpo, "_tuner_now", lambda problem, method: toy_tuner)
    try:
        assert hpo._table_configs("table:toy") == 3 and hpo._table_configs("branin") is None
        for method in ("random", "optuna"):
            row = {"problem": "table:toy", "method": method, "seed": 0}
            if method == "random":  # ours: with the levels and switches of the tuner now
                row.update(levels=toy_tuner.levels, switches=toy_tuner.switches)
            assert not hpo._stale({**row, "table_configs": 3})
            assert hpo._stale({**row, "table_configs": 2}) and hpo._stale(row)
    finally:
        hpo._table_configs.cache_clear()
