from .diffusion import DiffusionSegmentationInferer, SegmentationDiffusionPrepareBatch, mask_to_diffusion
from .slice_wise import SliceWiseInferer
from .streaming import StreamingSlidingWindowInferer, scan_interval
from .backends import BACKENDS, PRECISIONS, CompiledNetwork, calibration_windows, cpu_has_native_bf16
