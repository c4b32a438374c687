"""AdaS&S: one-shot embedding-size search (supernet + Adaptive Sampling + RL search under a
memory budget), one package.

Plain PyTorch core (imported here, no Lightning):

* :class:`SizeSpace`: candidate widths per field and memory accounting.
* :class:`SupernetEmbedding`: all candidates of all fields, per-sample sub-networks.
* :class:`UniformSampler`, :class:`AdaptiveSampler`: which sub-network each sample trains.
* :class:`ReinforceController`, :class:`ResourcePenalty`, :func:`search_sizes`: the search.
* :class:`SupernetOptions`, :class:`SearchOptions`: every option, once.
* :func:`~lightning_des.adass.baselines.mixed_dimension_choice`: the mixed-dimension baseline.

Lightning side: :mod:`lightning_des.adass.callbacks` (``AdaSSupernetCallback``,
``AdaSSearchCallback``, also exported by :mod:`lightning_des.callbacks`); the whole pipeline:
:func:`lightning_des.adass.pipeline.run_adass` (``lightning-des search``).
"""

from lightning_des.adass.controller import ReinforceController
from lightning_des.adass.options import SearchOptions, SupernetOptions
from lightning_des.adass.penalty import ResourcePenalty
from lightning_des.adass.sampler import AdaptiveSampler, UniformSampler
from lightning_des.adass.search import SearchResult, fit_to_budget, search_sizes
from lightning_des.adass.space import DEFAULT_CANDIDATES, SizeSpace
from lightning_des.adass.supernet import SupernetEmbedding

__all__ = [
    "DEFAULT_CANDIDATES",
    "AdaptiveSampler",
    "ReinforceController",
    "ResourcePenalty",
    "SearchOptions",
    "SearchResult",
    "SizeSpace",
    "SupernetEmbedding",
    "SupernetOptions",
    "UniformSampler",
    "fit_to_budget",
    "search_sizes",
]
