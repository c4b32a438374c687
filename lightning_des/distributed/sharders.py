"""DES sharder: TorchRec's table-wise ``EmbeddingBagCollection`` sharding without its output
all-to-all.

:class:`DESShardedEmbeddingBagCollection` reuses TorchRec's input distribution (ids of the
global batch reach the rank that owns each table) and lookup kernels, but instead of sending
pooled embeddings back to the sample owners (``output_dist``) it returns the *local* pooled
embeddings of the whole global batch, :class:`LocalPooled`. The DES head turns them into
partial results and reduce-scatters those (see :mod:`lightning_des.distributed.des_net`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor
from torchrec.distributed.embedding_types import KJTList
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionContext,
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.types import ParameterSharding, ShardingEnv, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from lightning_des.distributed.comm import comm_tag

DES_SHARDING_TYPES = (ShardingType.TABLE_WISE.value,)


@dataclass
class LocalPooled:
    """Pooled embeddings of the tables this rank owns, for every sample of the global batch.

    Attributes:
        values: ``{feature: (B_global, d_f)}``; rows are rank-major (rank 0's samples first).
        batch_size_per_rank: ``B_r`` for each rank r (``sum = B_global``).
    """

    values: dict[str, Tensor]
    batch_size_per_rank: list[int]


class TaggedShardedEmbeddingBagCollection(ShardedEmbeddingBagCollection):
    """TorchRec's sharded EBC (any sharding type) with its id distribution tagged ``ids`` for
    communication accounting (:mod:`lightning_des.distributed.comm`); otherwise unchanged."""

    def forward(self, *input: Any, **kwargs: Any) -> Any:
        ctx = self.create_context()
        with comm_tag("ids"):
            dist_input = self.input_dist(ctx, *input, **kwargs).wait().wait()
        return self.compute_and_output_dist(ctx, dist_input)


class DESShardedEmbeddingBagCollection(TaggedShardedEmbeddingBagCollection):
    """Table-wise sharded EBC whose forward returns :class:`LocalPooled` (no output dist)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bad = [t for t in self._sharding_types if t not in DES_SHARDING_TYPES]
        if bad:
            raise ValueError(f"DES shards tables {list(DES_SHARDING_TYPES)} only, the plan asks for {bad}")
        rank = self._env.rank
        sharding = self._embedding_shardings[0]
        self._local_names: list[str] = list(sharding.embedding_names_per_rank()[rank])
        self._local_dims: list[int] = list(sharding._emb_dim_per_rank_per_feature()[rank])

    def compute_and_output_dist(self, ctx: EmbeddingBagCollectionContext, input: KJTList) -> LocalPooled:  # type: ignore[override]
        sctx = ctx.sharding_contexts[0]
        sizes = [int(b) for b in sctx.batch_size_per_rank] if sctx.batch_size_per_rank else None
        if self._local_names:
            embs = self._lookups[0](input[0])  # (B_global, sum of local dims)
            cols = torch.split(embs, self._local_dims, dim=1)
            values = dict(zip(self._local_names, cols))
        else:
            values = {}
        if sizes is None:  # same batch size on every rank
            b = int(input[0].stride()) if self._local_names else 0
            sizes = [b // self._env.world_size] * self._env.world_size
        return LocalPooled(values, sizes)


class DESEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """``ModuleSharder`` for DES: plans table-wise sharding for the collections DES consumes
    and TorchRec's standard sharded module for the others.

    Args:
        des_modules: FQNs of the collections that DES consumes; they become
            :class:`DESShardedEmbeddingBagCollection`. Any other collection gets TorchRec's
            standard table-wise sharding (pooled embeddings all-to-all'ed back).
        sharding_types: what the planner may choose for the other collections (DES collections
            are table-wise regardless); default table-wise only. TorchRec's base sharder hides
            row-wise types on CPU although they run there; listing them here re-enables them.
        **kwargs: as for ``EmbeddingBagCollectionSharder`` (``fused_params``, ...).
    """

    def __init__(self, des_modules: Iterable[str] = (), sharding_types: Iterable[str] = DES_SHARDING_TYPES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.des_modules = frozenset(des_modules)
        self._types = list(sharding_types)
        unknown = sorted(set(self._types) - {t.value for t in ShardingType})
        if unknown:
            raise ValueError(f"unknown sharding types {unknown}; TorchRec has {sorted(t.value for t in ShardingType)}")

    def shard(
        self,
        module: EmbeddingBagCollection,
        params: dict[str, ParameterSharding],
        env: ShardingEnv,
        device: torch.device | None = None,
        module_fqn: str | None = None,
    ) -> ShardedEmbeddingBagCollection:
        cls = DESShardedEmbeddingBagCollection if module_fqn in self.des_modules else TaggedShardedEmbeddingBagCollection
        return cls(
            module=module,
            table_name_to_parameter_sharding=params,
            env=env,
            fused_params=self.fused_params,
            device=device,
            qcomm_codecs_registry=self.qcomm_codecs_registry,
            module_fqn=module_fqn,
        )

    def sharding_types(self, compute_device_type: str) -> list[str]:
        return list(self._types)
