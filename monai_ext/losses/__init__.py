from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".deep_supervision": ["DeepSupervisionLoss"],
        ".madgnet": ["MADGNetLoss", "madgnet_targets", "structure_loss"],
        ".reciprocal": ["ReciprocalLoss"],
    },
)
