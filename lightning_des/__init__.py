"""lightning-des: Lightning plugins for large recommendation models on TorchRec."""

__version__ = "0.1.0"
