from .bundle_checkpoint import BundleCheckpointSaver
from .segmentation_report import SegmentationReport
from .time_budget import TimeBudget
