"""Batching helpers shared by the text data modules (token id 0 = padding)."""

from __future__ import annotations

from typing import Sequence

import torch


def pad(seqs: Sequence[Sequence[int]], value: int = 0) -> torch.Tensor:
    """Right-pad token lists into a [B, T] LongTensor."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    """A list of ``{name: token list}`` examples as ``{name: [B, T] tensor}``."""
    return {k: pad([b[k] for b in batch]) for k in batch[0]}


class fitted:
    """A data-module attribute computed on first use by the owner's ``_fit()`` (which returns a
    dict of such attributes), so constructing the module (LightningCLI, ``--print_config``) stays
    cheap and the corpus work happens once, when data or vocabulary sizes are first needed."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        if obj.__dict__.get("_fitted") is None:
            obj.__dict__["_fitted"] = obj._fit()
        return obj.__dict__["_fitted"][self.name]
