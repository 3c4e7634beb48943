from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".higmisnet": ["HiGMISGenerator", "HiGMISnet", "PairedPatchDiscriminator"],
        ".madgnet": ["MADGNet"],
        ".medsegdiff": ["MedSegDiff"],
        ".resnest": ["ResNeSt"],
        ".resunet": ["ResUNet"],
        ".resunetplusplus": ["ResUNetPlusPlus"],
        ".unetplusplus": ["UNetPlusPlus"],
    },
)
