"""memgate: soft entropy gates over CIFAR ResNets (Garg et al. 2019)."""

__version__ = "0.1.0"
