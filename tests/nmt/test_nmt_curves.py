"""benchmarks/nmt_curves.py: per-epoch means over seeds, gaps, and a clear error without runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import nmt_curves  # noqa: E402


def _row(model, seed, curve, epochs=2, pair="zh_en"):
    return {"pair": pair, "model": model, "seed": seed, "epochs": epochs, "val_curve": curve}


def test_means_over_seeds_and_gaps():
    rows = [_row("bahdanau", 0, [{"epoch": 0, "val_loss": 4.0, "train_loss": 5.0}, {"epoch": 1, "val_loss": 3.0, "train_loss": 4.0}]),
            _row("bahdanau", 1, [{"epoch": 0, "val_loss": 4.2, "train_loss": 5.2}, {"epoch": 1, "val_loss": 3.2, "train_loss": 4.2}]),
            _row("kvmem", 0, [{"epoch": 0, "val_loss": 4.5}, {"epoch": 1, "val_loss": 3.5, "train_loss": 4.5}]),
            _row("kvmem", 0, [{"epoch": 0, "val_loss": 9.0}], epochs=1),  # another budget: not counted
            _row("kvmem", 0, [{"epoch": 0, "val_loss": 9.0}, {"epoch": 1, "val_loss": 9.0}], pair="de_en")]
    c = nmt_curves.curves(rows, "zh_en", 2, ["bahdanau", "kvmem"])
    assert c["bahdanau"][1]["seeds"] == 2 and c["bahdanau"][1]["val_loss"] == pytest.approx(3.1)
    assert c["bahdanau"][0]["train_loss"] == pytest.approx(5.1)
    assert "train_loss" not in c["kvmem"][0] and c["kvmem"][1]["train_loss"] == 4.5  # not logged in epoch 0
    lines = nmt_curves.table(c, ["bahdanau", "kvmem"])
    assert lines[2].split(" | ")[-2] == "+0.400"  # val_loss gap at epoch 1: 4.5 - 4.1
    assert lines[3].split(" | ")[-3] == "+0.400"  # train_loss gap at epoch 2: 4.5 - 4.1
    assert "| - |" in lines[2]  # no train_loss gap where one model did not log it


def test_no_finished_run_names_the_missing_one():
    with pytest.raises(SystemExit, match="no finished zh_en kvmem run of 2 epochs"):
        nmt_curves.curves([_row("bahdanau", 0, [{"epoch": 0, "val_loss": 4.0}])], "zh_en", 2, ["bahdanau", "kvmem"])
