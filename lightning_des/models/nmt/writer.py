"""``TranslationWriter``: ``predict`` writes one translation per line, in input order."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter


class TranslationWriter(BasePredictionWriter):
    def __init__(self, output_file: str) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = Path(output_file)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        # the bucketed loader reorders sentences: put them back by dataset index
        if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], list):
            batch_indices = batch_indices[0]  # several dataloaders: the first
        rows: dict[int, str] = {}
        for preds, idx in zip(predictions, batch_indices):
            rows.update(zip(idx, preds))
        if len(rows) != sum(len(p) for p in predictions):
            raise RuntimeError("TranslationWriter: prediction indices were not tracked; cannot restore the input order")
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self.output_file.write_text("".join(rows[i] + "\n" for i in sorted(rows)), encoding="utf-8")
