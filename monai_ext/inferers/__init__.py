from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".backends": ["BACKENDS", "PRECISIONS", "CompiledNetwork", "calibration_windows", "cpu_has_native_bf16"],
        ".diffusion": ["DiffusionSegmentationInferer", "SegmentationDiffusionPrepareBatch", "mask_to_diffusion"],
        ".exported_program": ["export_program", "load_program", "save_program", "weights_digest"],
        ".streaming": ["StreamingSlidingWindowInferer", "scan_interval"],
    },
)
