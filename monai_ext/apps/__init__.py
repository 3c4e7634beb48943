from .segment import BundleSegmenter, segment
