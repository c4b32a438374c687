"""Lightning callbacks of lightning-des."""

from lightning_des.callbacks.comm_stats import CommStatsCallback

__all__ = ["CommStatsCallback"]
