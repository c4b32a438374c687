"""A 2-process DES fit through Lightning (run as a script: Lightning's launcher re-runs it).

    python des_fit_script.py OUT_DIR MAX_EPOCHS [CKPT_PATH [DEVICES]]

Records every training loss; rank 0 writes OUT_DIR/losses.json, OUT_DIR/full_state.pt (the
gathered unsharded weights at the end) and OUT_DIR/comm.json (CommStatsCallback summary). A
resumed run also writes OUT_DIR/restored.pt: the gathered model and optimizer tensors right after
loading, keyed as in the checkpoint (``model/``, ``optim/0/``, ``fused/``).
"""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

import lightning_des  # noqa: F401
from lightning_des.callbacks import CommStatsCallback
from lightning_des.data.modules import SyntheticCTRDataModule
from lightning_des.distributed.state import gather_full_state_dict
from lightning_des.models.recsys import DeepFM


class Losses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean").item())


class DumpRestored(pl.Callback):
    def __init__(self, out):
        self.out = out

    def on_train_start(self, trainer, pl_module):
        import torch.distributed as dist

        from lightning_des.distributed.checkpoint import flatten
        from lightning_des.distributed.state import merge_local, to_local

        full = {f"model/net.{k}": v for k, v in gather_full_state_dict(pl_module.net).items()}
        mine = flatten(trainer.optimizers[0].state_dict()["state"], "optim/0")[0]
        mine.update(flatten(pl_module.net.fused_optimizer.state_dict()["state"], "fused")[0])
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, to_local(mine))
        full.update(merge_local(everyone))
        if trainer.is_global_zero:
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save(full, self.out / "restored.pt")


def main():
    out, max_epochs = Path(sys.argv[1]), int(sys.argv[2])
    ckpt = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    devices = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    pl.seed_everything(0)
    dm = SyntheticCTRDataModule(num_rows=600, num_dense=2, num_sparse=5, cardinality=40, multi_hot=2, batch_size=32)
    model = DeepFM(dm.schema, embedding_dim=8, hidden=(16,), sparse_optimizer="adagrad", sparse_lr=0.1, dense_lr=0.01)
    losses = Losses()
    stats = CommStatsCallback(output=str(out / "comm.json"))
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=out / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer = pl.Trainer(
        strategy=lightning_des.DESStrategy(mode="des"), accelerator="cpu", devices=devices, max_epochs=max_epochs,
        limit_train_batches=4, limit_val_batches=2, logger=False, enable_progress_bar=False,
        callbacks=[losses, stats, ckpt_cb] + ([DumpRestored(out)] if ckpt else []), default_root_dir=out,
    )
    trainer.fit(model, dm, ckpt_path=ckpt)
    full = gather_full_state_dict(model.net)
    if trainer.is_global_zero:
        (out / "losses.json").write_text(json.dumps(losses.losses))
        torch.save(full, out / "full_state.pt")


if __name__ == "__main__":
    main()
