from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".plan": [],
        ".datalist": ["LazyDatalist", "require_cases"],
        ".nifti": ["NiftiWriter"],
        ".public": ["DATASETS", "DatasetLayoutError", "prepare_dataset"],
        ".synthetic": ["SYNTHETIC_LABELS", "make_synthetic_dataset", "synthetic_case"],
    },
)
