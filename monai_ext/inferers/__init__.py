from .backends import BACKENDS, PRECISIONS, CompiledNetwork, calibration_windows, cpu_has_native_bf16
from .diffusion import DiffusionSegmentationInferer, SegmentationDiffusionPrepareBatch, mask_to_diffusion
from .exported_program import export_program, load_program, save_program, weights_digest
from .streaming import StreamingSlidingWindowInferer, scan_interval
