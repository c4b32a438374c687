"""DES: Distributed Equivalent Substitution on TorchRec sharders."""
