from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".segmentation": ["boundary_f1", "pixel_accuracies", "segmentation_metrics", "summarise"],
    },
)
