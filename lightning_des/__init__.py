"""lightning-des: Lightning plugins for large recommendation models on TorchRec.

Importing the package registers the ``"des"`` strategy with Lightning's strategy registry and
the ``"counting"`` process-group backend with ``torch.distributed``. Neither imports TorchRec:
the strategy class loads on first use (``Trainer(strategy="des")`` or ``lightning_des.DESStrategy``),
so the tuner and the text models work where TorchRec is not installed.
"""

from typing import Any

from lightning.pytorch.strategies import StrategyRegistry

from lightning_des.distributed import comm as _comm

__version__ = "0.1.0"


def _des_strategy(**kwargs: Any):
    """``StrategyRegistry`` entry for ``"des"``: builds a :class:`DESStrategy` (imports TorchRec)."""
    from lightning_des.distributed.strategy import DESStrategy

    return DESStrategy(**kwargs)


if "des" not in StrategyRegistry:
    StrategyRegistry.register("des", _des_strategy, description="Distributed Equivalent Substitution on TorchRec")
_comm.register()


def __getattr__(name: str) -> Any:
    if name == "DESStrategy":
        from lightning_des.distributed.strategy import DESStrategy

        return DESStrategy
    raise AttributeError(f"module 'lightning_des' has no attribute {name!r}")


__all__ = ["DESStrategy", "__version__"]
