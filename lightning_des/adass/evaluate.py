"""Score size choices with a trained supernet (no retraining): validation AUC of the
sub-network, from per-candidate embeddings computed once."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc
from torchrec.datasets.utils import Batch

from lightning_des.models.recsys.nets import RecsysNet, SumOverFieldsHead
from lightning_des.adass.supernet import SupernetEmbedding


class SupernetEvaluator:
    """``evaluator(choice) -> AUC`` of the sub-network ``choice`` on ``batches``.

    The projected embeddings of every candidate, the wide partial sums and the dense features
    are computed once (``O(N * F * C * dim)`` floats); a choice then costs one pass of the
    head's split form: ``post(wide + sum_f deep_partial_f(choice_f), dense)``.

    ``max_rows`` keeps a uniform random subset of that many rows (drawn with ``seed``, the
    same for every choice) to score on: a search makes thousands of evaluations, each linear
    in the rows.
    """

    def __init__(self, net: RecsysNet, batches: Iterable[Batch], max_rows: int | None = None, seed: int = 0) -> None:
        if max_rows is not None and max_rows < 2:
            raise ValueError(f"max_rows must be >= 2 (AUC needs rows to rank), got {max_rows}")
        if not isinstance(net.deep, SupernetEmbedding) or not isinstance(net.head, SumOverFieldsHead):
            raise TypeError("SupernetEvaluator needs a RecsysNet whose deep tables are a SupernetEmbedding and whose head is a SumOverFieldsHead")
        self.net, self.fields = net, net.deep.space.fields
        was_training = net.training
        net.eval()
        cands: dict[str, list[Tensor]] = {f: [] for f in self.fields}
        wide, dense, labels = [], [], []
        with torch.no_grad():
            for b in batches:
                kjt, n = b.sparse_features, b.labels.numel()
                w = net.wide(kjt).to_dict() if net.wide is not None else {}
                wide.append(net.head.wide_partial(w, n))
                for f, t in net.deep.candidate_outputs(kjt).items():
                    cands[f].append(t)
                dense.append(b.dense_features)
                labels.append(b.labels)
        net.train(was_training)
        if not labels:
            raise ValueError("SupernetEvaluator got no batches to score on")
        self.cands = {f: torch.cat(v) for f, v in cands.items()}  # (N, C, dim)
        self.wide, self.dense, self.labels = torch.cat(wide), torch.cat(dense), torch.cat(labels).long()
        n = self.labels.numel()
        if max_rows is not None and max_rows < n:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows].sort().values
            self.cands = {f: t[keep] for f, t in self.cands.items()}
            self.wide, self.dense, self.labels = self.wide[keep], self.dense[keep], self.labels[keep]
        self.rows = self.labels.numel()

    @torch.no_grad()
    def logits(self, choice: Sequence[int]) -> Tensor:
        head, n = self.net.head, self.labels.numel()
        was_training = head.training
        head.eval()
        deep = {f: self.cands[f][:, int(c)] for f, c in zip(self.fields, choice)}
        s = torch.cat([self.wide, head.deep_partial(deep, n)], dim=1)
        out = head.post(s, self.dense)
        head.train(was_training)
        return out

    def __call__(self, choice: Sequence[int]) -> float:
        return float(binary_auroc(torch.sigmoid(self.logits(choice)), self.labels))
