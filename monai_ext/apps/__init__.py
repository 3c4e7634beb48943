from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".segment": ["BundleSegmenter", "segment"],
    },
)
