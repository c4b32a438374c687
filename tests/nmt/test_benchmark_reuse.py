"""benchmarks/nmt.py's cache: recorded settings, and reuse of a trained model across variants
that differ only in decoding."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import nmt  # noqa: E402


def test_a_variant_differing_only_in_decoding_reuses_the_trained_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(nmt.VARIANTS, "x_lp", ("bahdanau", ["--model.length_penalty", "0.25", "--model.beam", "3"]))
    monkeypatch.setitem(nmt.VARIANTS, "x_drop", ("bahdanau", ["--model.dropout", "0.45"]))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch=1-step=9.ckpt").write_bytes(b"")
    row = {"pair": "de_en", "model": "bahdanau", "seed": 0, "epochs": 2, "model_args": nmt.model_args("de_en", "bahdanau"),
           "best": "epoch=1-step=9.ckpt", "predictions": str(tmp_path / "predictions.txt"), "fit_s": 12.0}
    assert nmt.model_args("de_en", "x_lp")["length_penalty"] == 0.25 and nmt.model_args("de_en", "x_lp") != row["model_args"]
    assert nmt.trained_before("de_en", "x_lp", 0, 2, [row]) is row
    assert nmt.trained_before("de_en", "x_drop", 0, 2, [row]) is None  # dropout shapes training
    assert nmt.trained_before("de_en", "x_lp", 1, 2, [row]) is None  # another seed
    assert nmt.trained_before("de_en", "x_lp", 0, None, [row]) is None  # another budget
    assert nmt.trained_before("de_en", "x_lp", 0, 2, [{k: v for k, v in row.items() if k != "model_args"}]) is None  # settings unknown
    (tmp_path / "checkpoints" / "epoch=1-step=9.ckpt").unlink()
    assert nmt.trained_before("de_en", "x_lp", 0, 2, [row]) is None  # checkpoint gone


def test_the_reused_checkpoint_carries_the_variants_decoding_settings(tmp_path):
    """LightningCLI takes a checkpoint's hyperparameters over --config and the command line, so
    a reused model is tested from a copy whose decoding settings are the variant's."""
    import torch

    trained = tmp_path / "epoch=1-step=9.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"length_penalty": 1.0, "dropout": 0.2, "beam": 5}}, trained)
    args = {"length_penalty": 0.5, "beam": 3, "dropout": 0.45, "length_norm": "gnmt"}
    out = nmt.with_decoding(trained, tmp_path / "run" / "checkpoints", args)
    ckpt = torch.load(out, weights_only=False)
    assert ckpt["hyper_parameters"] == {"length_penalty": 0.5, "dropout": 0.2, "beam": 3, "length_norm": "gnmt"}  # training ones untouched
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2)) and torch.load(trained, weights_only=False)["hyper_parameters"]["length_penalty"] == 1.0
