from .datalist import LazyDatalist, require_cases
from .synthetic import SYNTHETIC_LABELS, make_synthetic_dataset, synthetic_case
from .public import DATASETS, DatasetLayoutError, prepare_dataset
from .nifti import NiftiWriter
from . import plan
