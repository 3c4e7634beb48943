from .bundle_checkpoint import BundleCheckpointSaver
from .gradient_clipping import GradientClipping
from .lr_schedule import LrSchedule
from .multi_scale import MultiScaleTraining
from .progress import TrainingProgress
from .segmentation_report import SegmentationReport
from .stop_at_target import StopAtTarget
from .summary_writer import LazySummaryWriter
from .time_budget import BudgetClock, TimeBudget
from .training_errors import TrainingError, TrainingErrors, run_training
from .weight_average import WeightAverage
