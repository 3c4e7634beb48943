from . import plan
from .datalist import LazyDatalist, require_cases
from .nifti import NiftiWriter
from .public import DATASETS, DatasetLayoutError, prepare_dataset
from .synthetic import SYNTHETIC_LABELS, make_synthetic_dataset, synthetic_case
