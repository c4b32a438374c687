"""FlexHB multi-fidelity hyperparameter tuning core (plain Python/NumPy/scikit-learn).

Built so far: search spaces, the ask/tell tuner with Hyperband/BOHB/FlexHB modes (fine-grained
fidelity, MFES-HB-style ensemble surrogate, Global SH, FlexBand), resumable study files.
Not built yet: the Lightning ``FlexHBTuner``, ``lightning-des tune`` and the peer benchmark.
"""

from lightning_des.tuner.flexhb import FlexHB, Job, Trial
from lightning_des.tuner.space import Categorical, Float, Int, SearchSpace

__all__ = ["Categorical", "FlexHB", "Float", "Int", "Job", "SearchSpace", "Trial"]
