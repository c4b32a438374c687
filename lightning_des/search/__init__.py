"""AdaS&S one-shot embedding-size search, in plain PyTorch (no Lightning).

* :class:`SizeSpace`: candidate widths per field and memory accounting.
* :class:`SupernetEmbedding`: all candidates of all fields, per-sample sub-networks.
* :class:`UniformSampler`, :class:`AdaptiveSampler`: which sub-network each sample trains.
* :class:`ReinforceController`, :class:`ResourcePenalty`, :func:`search_sizes`: the search.

The Lightning side is :mod:`lightning_des.callbacks.adass`; the whole pipeline is
:func:`lightning_des.adass.run_adass` (``lightning-des search``).
"""

from lightning_des.search.controller import ReinforceController
from lightning_des.search.penalty import ResourcePenalty
from lightning_des.search.sampler import AdaptiveSampler, UniformSampler
from lightning_des.search.search import SearchResult, fit_to_budget, search_sizes
from lightning_des.search.space import DEFAULT_CANDIDATES, SizeSpace
from lightning_des.search.supernet import SupernetEmbedding

__all__ = [
    "DEFAULT_CANDIDATES",
    "AdaptiveSampler",
    "ReinforceController",
    "ResourcePenalty",
    "SearchResult",
    "SizeSpace",
    "SupernetEmbedding",
    "UniformSampler",
    "fit_to_budget",
    "search_sizes",
]
