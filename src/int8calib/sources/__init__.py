"""Sources: turn --data (list file, directory, glob, image, .npy, .npz) into an ordered sample list,
or --data-loader-script into a stream of feed dicts."""

from .feeds import FeedDictSource, load_data_loader_script, split_rows
from .resolve import IMAGE_EXTENSIONS, Sample, batching_fingerprint, data_fingerprint, resolve

__all__ = ["IMAGE_EXTENSIONS", "FeedDictSource", "Sample", "batching_fingerprint", "data_fingerprint", "load_data_loader_script", "resolve"]
