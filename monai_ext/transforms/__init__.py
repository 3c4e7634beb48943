from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".augmentation": ["SpatialAugmentd"],
        ".diffusion": ["SplitDiffusionMapsd"],
        ".geometry": ["CheckSameGeometryd"],
        ".intensity": ["IntensityNormalizationd"],
        ".invert": ["InvertLabelsd"],
        ".io": ["LoadImageSeriesd"],
    },
)
