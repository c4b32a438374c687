"""benchmarks/nmt.py's cache: recorded settings, and reuse of a trained model across variants
that differ only in decoding."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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


def test_the_report_takes_only_runs_with_todays_settings_from_every_results_file(tmp_path, monkeypatch):
    """``--report-only`` gathers the runs of several ``--out`` files (parallel benchmark processes
    write separate ones); a row whose recorded settings are no variant's today is left out, and a
    row counts for every variant whose settings it has (an ablation a recipe adopted)."""
    import json

    monkeypatch.setattr(nmt, "VARIANTS", {"kvmem": ("kvmem", []), "kvmem_d5": ("kvmem", ["--model.dropout", "0.5"])})
    today = nmt.model_args("de_en", "kvmem")
    rows = [{"pair": "de_en", "model": "kvmem", "seed": 0, "epochs": 2, "model_args": today, "bleu": 1.0},
            {"pair": "de_en", "model": "kvmem", "seed": 1, "epochs": 2, "model_args": {**today, "dropout": 0.5}, "bleu": 2.0},  # kvmem_d5's
            {"pair": "de_en", "model": "kvmem", "seed": 2, "epochs": 2, "bleu": 3.0},  # settings unknown
            {"pair": "de_en", "model": "kvmem", "seed": 3, "epochs": 2, "model_args": {**today, "dropout": 0.4}, "bleu": 3.5},  # no one's
            {"pair": "de_en", "model": "gone_variant", "seed": 4, "epochs": 2, "model_args": today, "bleu": 4.0}]
    (tmp_path / "nmt_a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    later = {**rows[0], "bleu": 5.0, "seed": 0}
    (tmp_path / "nmt_b.jsonl").write_text(json.dumps(later) + "\n" + json.dumps({**later, "seed": 1, "bleu": 6.0}) + "\n")
    found = nmt.current_rows([tmp_path / "nmt_a.jsonl", tmp_path / "nmt_b.jsonl"])
    assert sorted(found) == [("de_en", "kvmem", 0, 2), ("de_en", "kvmem", 1, 2), ("de_en", "kvmem", 4, 2), ("de_en", "kvmem_d5", 1, 2)]
    assert found[("de_en", "kvmem", 0, 2)]["bleu"] == 5.0 and found[("de_en", "kvmem", 1, 2)]["bleu"] == 6.0
    assert found[("de_en", "kvmem_d5", 1, 2)] == {**rows[1], "model": "kvmem_d5", "run_as": "kvmem"}
    assert found[("de_en", "kvmem", 4, 2)] == {**rows[4], "model": "kvmem", "run_as": "gone_variant"}
    assert "run_as" not in found[("de_en", "kvmem", 0, 2)]


def test_the_best_validation_loss_is_read_from_the_checkpoints_callback_state(tmp_path):
    import torch

    ck = tmp_path / "epoch=1.ckpt"
    torch.save({"callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {"monitor": "val_loss", "best_model_score": torch.tensor(3.25)},
                              "TranslationWriter": {}}}, ck)
    assert nmt.best_val_loss(ck) == 3.25
    torch.save({"callbacks": {}}, ck)
    assert nmt.best_val_loss(ck) is None


def test_settings_the_attention_ignores_do_not_make_a_run_outdated(monkeypatch):
    """A baseline row recorded with ``rounds: 2`` (additive attention never reads it) and rows
    recorded before a setting existed (its default then applies) still count."""
    monkeypatch.setattr(nmt, "VARIANTS", {"bahdanau": ("bahdanau", []), "kvmem": ("kvmem", []),
                                          "bahdanau_untied": ("bahdanau", ["--model.tie_embeddings", "false"])})
    base = nmt.model_args("de_en", "bahdanau")
    assert base["tie_embeddings"] is True  # the recipe's
    old = {k: v for k, v in base.items() if k != "tie_embeddings"}  # recorded before the recipe tied them: default False
    assert nmt.training_args({**base, "rounds": 2}) == nmt.training_args(base)
    assert nmt.training_args(old) == nmt.training_args(nmt.model_args("de_en", "bahdanau_untied")) != nmt.training_args(base)
    kv = nmt.model_args("de_en", "kvmem")
    assert nmt.training_args({**kv, "rounds": 2}) != nmt.training_args(kv)  # KVMemAtt reads it


def test_a_changed_recipe_runs_in_a_folder_of_its_own(monkeypatch):
    first = nmt.run_dir("de_en", "bahdanau", 0, 2)
    assert first.name.startswith("bahdanau_de_en_s0_e2_") and first == nmt.run_dir("de_en", "bahdanau", 0, 2)
    monkeypatch.setitem(nmt.VARIANTS, "bahdanau", ("bahdanau", ["--model.dropout", "0.45"]))
    assert nmt.run_dir("de_en", "bahdanau", 0, 2) != first
    monkeypatch.setitem(nmt.VARIANTS, "bahdanau", ("bahdanau", ["--model.rounds", "3"]))  # ignored by additive attention
    assert nmt.run_dir("de_en", "bahdanau", 0, 2) == first


def test_a_benchmark_fit_selects_by_the_variants_metric_and_logs_the_validation_curve(tmp_path, monkeypatch):
    """The recipe's fit as the benchmark runs it, on toy data: the checkpoint monitors greedy
    validation BLEU when the variant has ``val_bleu`` (validation loss otherwise), and the
    curve read back has one entry per epoch."""
    import torch

    from lightning_des.cli import main

    tsv = tmp_path / "toy.tsv"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    tsv.write_text("".join(f"{' '.join(words[i % 10:])}\t{' '.join(words[i % 10:]).upper()}\n" for i in range(50)))
    toy = ["--data.init_args.path", str(tsv), "--data.init_args.vocab_size", "40", "--model.init_args.hidden", "16",
           "--model.init_args.embedding_dim", "8", "--trainer.max_epochs", "2"]
    monkeypatch.setitem(nmt.VARIANTS, "x_loss", ("bahdanau", ["--model.val_bleu", "false"]))
    for model, monitor in (("bahdanau", "val_bleu"), ("x_loss", "val_loss")):
        out = tmp_path / model
        assert main(["fit", *nmt.cli_args("de_en", model, 0, out), *toy, *nmt.fit_logger_args(out)]) == 0
        curve = nmt.validation_curve(out / "csv" / "fit" / "metrics.csv")
        assert [c["epoch"] for c in curve] == [0, 1] and all(("val_bleu" in c) == (monitor == "val_bleu") for c in curve)
        best = [p for p in (out / "checkpoints").glob("epoch=*.ckpt")]
        assert len(best) == 1  # save_top_k=1 (the recipe's callbacks are replaced, not appended to)
        states = torch.load(best[0], weights_only=False)["callbacks"]
        assert [v["monitor"] for k, v in states.items() if k.startswith("ModelCheckpoint")] == [monitor]
        assert (nmt.best_val_loss(best[0]) is None) == (monitor == "val_bleu")


def test_the_curve_records_the_epochs_token_weighted_training_loss(tmp_path):
    """With lr 0 and no dropout the model is fixed, so the logged epoch figures must equal the
    dense token-weighted means over batches of unequal token counts: label-smoothed for training
    (as optimised), plain for validation."""
    import lightning.pytorch as pl
    import torch.nn.functional as F
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from lightning_des.data.translation import PAD
    from lightning_des.models.nmt import Seq2Seq

    from tests.nmt.test_nmt import _toy_batches

    torch_batches = [_toy_batches(n, seed)[0] for n, seed in ((3, 1), (7, 2), (12, 3))]
    m = Seq2Seq(24, 34, attention="kvmem", embedding_dim=16, hidden=24, dropout=0.0, lr=0.0, label_smoothing=0.1, val_bleu=False)
    trainer = pl.Trainer(max_epochs=1, logger=CSVLogger(tmp_path, name="csv", version="fit"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    loader = lambda: DataLoader(torch_batches, batch_size=None)  # noqa: E731  (three ready batches)
    trainer.fit(m, train_dataloaders=loader(), val_dataloaders=loader())

    def mean(smoothing):
        import torch

        with torch.no_grad():
            total = [(F.cross_entropy(m(b["src"], b["tgt"])[0].flatten(0, 1), b["tgt"][:, 1:].flatten(), ignore_index=PAD,
                                      reduction="sum", label_smoothing=smoothing), (b["tgt"][:, 1:] != PAD).sum()) for b in torch_batches]
        return float(sum(c for c, _ in total) / sum(n for _, n in total))

    curve = nmt.validation_curve(tmp_path / "csv" / "fit" / "metrics.csv")
    assert [c["epoch"] for c in curve] == [0]
    assert abs(curve[0]["train_loss"] - mean(0.1)) < 1e-5 and abs(curve[0]["val_loss"] - mean(0.0)) < 1e-5
    assert abs(mean(0.1) - mean(0.0)) > 1e-4  # the two figures are told apart


def test_a_data_override_is_recorded_and_keeps_runs_apart(tmp_path, monkeypatch):
    monkeypatch.setitem(nmt.VARIANTS, "x_bt", ("bahdanau", ["--data.batch_tokens", "900"]))
    args = nmt.model_args("de_en", "x_bt")
    assert args["data.batch_tokens"] == 900 and {k: v for k, v in args.items() if k != "data.batch_tokens"} == nmt.model_args("de_en", "bahdanau")
    assert nmt.run_dir("de_en", "x_bt", 0, 2).name.rsplit("_", 1)[1] != nmt.run_dir("de_en", "bahdanau", 0, 2).name.rsplit("_", 1)[1]
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch=1-step=9.ckpt").write_bytes(b"")
    row = {"pair": "de_en", "model": "bahdanau", "seed": 0, "epochs": 2, "model_args": nmt.model_args("de_en", "bahdanau"),
           "best": "epoch=1-step=9.ckpt", "predictions": str(tmp_path / "predictions.txt"), "fit_s": 1.0}
    assert nmt.trained_before("de_en", "x_bt", 0, 2, [row]) is None  # batching shapes training
    f = tmp_path / "nmt_rows.jsonl"
    f.write_text(json.dumps(row) + "\n")
    assert ("de_en", "x_bt", 0, 2) not in nmt.current_rows([f])  # the baseline's run is not the variant's
    monkeypatch.setitem(nmt.VARIANTS, "x_bad", ("bahdanau", ["--trainer.max_epochs", "3"]))
    with pytest.raises(ValueError, match="--trainer.max_epochs"):
        nmt.model_args("de_en", "x_bad")
