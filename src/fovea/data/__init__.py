"""Data: sources (built-in datasets, folders, CSV files) and robust image decoding."""

from fovea.data.decode import MAX_PIXELS, BadImageError, load_image
from fovea.data.sources import DATASETS, DataBundle, Split, data_root, load_data

__all__ = ["DATASETS", "MAX_PIXELS", "BadImageError", "DataBundle", "Split", "data_root", "load_data", "load_image"]
