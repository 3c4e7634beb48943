from .bundle_checkpoint import BundleCheckpointSaver
from .segmentation_report import SegmentationReport
from .time_budget import TimeBudget
from .progress import TrainingProgress
from .stop_at_target import StopAtTarget
from .weight_average import WeightAverage
from .gradient_clipping import GradientClipping
from .lr_schedule import LrSchedule
from .multi_scale import MultiScaleTraining
from .training_errors import TrainingError, TrainingErrors, run_training
from .summary_writer import LazySummaryWriter
