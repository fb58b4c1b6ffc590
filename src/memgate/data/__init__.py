"""Data: sources and download, the content-keyed cache, the split (subset, noise), the device loader.

Flow: fetch (find the source) -> sources (decode) -> cache (decode once) -> split (which images,
which labels) -> loader (device-resident batches with augmentation).
"""

from .cache import load_dataset
from .dataset import Dataset
from .fetch import find_data
from .split import Split, make_split
from .stats import dataset_info, normalization

__all__ = ["Dataset", "Split", "dataset_info", "find_data", "load_dataset", "make_split", "normalization"]
