"""Lightning callbacks of lightning-des."""

from lightning_des.adass.callbacks import AdaSSearchCallback, AdaSSupernetCallback
from lightning_des.callbacks.comm_stats import CommStatsCallback

__all__ = ["AdaSSearchCallback", "AdaSSupernetCallback", "CommStatsCallback"]
