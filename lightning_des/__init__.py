"""lightning-des: Lightning plugins for large recommendation models on TorchRec.

Importing the package registers the ``"des"`` strategy with Lightning's strategy registry and
the ``"counting"`` process-group backend with ``torch.distributed``.
"""

from lightning.pytorch.strategies import StrategyRegistry

from lightning_des.distributed import comm as _comm
from lightning_des.distributed.strategy import DESStrategy

__version__ = "0.1.0"

if DESStrategy.strategy_name not in StrategyRegistry:
    DESStrategy.register_strategies(StrategyRegistry)
_comm.register()

__all__ = ["DESStrategy", "__version__"]
