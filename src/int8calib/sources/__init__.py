"""Sources: turn --data (list file, directory, glob, image, .npy, .npz) into an ordered sample list."""

from .resolve import IMAGE_EXTENSIONS, Sample, data_fingerprint, resolve

__all__ = ["IMAGE_EXTENSIONS", "Sample", "data_fingerprint", "resolve"]
