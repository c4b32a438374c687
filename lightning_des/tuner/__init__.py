"""FlexHB multi-fidelity hyperparameter tuning.

The core (plain Python/NumPy/scikit-learn): search spaces, the ask/tell tuner with
random/Hyperband/BOHB/FlexHB modes (fine-grained fidelity, MFES-HB-style ensemble surrogate,
Global SH, FlexBand), resumable study files. The Lightning front end
(:class:`~lightning_des.tuner.lightning.FlexHBTuner`, ``lightning-des tune``) lives in
:mod:`lightning_des.tuner.lightning`; the comparison with peer tuners in ``benchmarks/hpo.py``.
"""

from lightning_des._extras import require

require("sklearn", "tune")  # the surrogate (random forests) and rank statistics (scipy)
require("scipy", "tune")

from lightning_des.tuner.flexhb import FlexHB, Job, Trial  # noqa: E402
from lightning_des.tuner.space import Categorical, Float, Int, SearchSpace

__all__ = ["Categorical", "FlexHB", "Float", "Int", "Job", "SearchSpace", "Trial"]
