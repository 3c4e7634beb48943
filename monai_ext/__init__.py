"""MONAI extensions for clinical image segmentation: layers, networks, inferers, bundles and apps.

Subpackages load on first use (``monai_ext.transforms.X`` works after ``import monai_ext``, as bundle
config expressions such as ``$monai_ext.bundle.TrainedSettings(@checkpoint)`` need).
"""

import importlib
import logging
import warnings

__version__ = "0.1.0"

# The bundles orient every image with axcodes "RAS", so one config serves 2D images and 3D volumes; MONAI's
# Orientation uses the first D codes for a D-dimensional image and warns each time (with a message that
# reads the comparison backwards). Only that message is silenced.
warnings.filterwarnings(
    "ignore",
    message=r"axcodes \('RAS'\) length is smaller than number of input spatial dimensions",
    category=UserWarning,
)

# MONAI 1.6 builds an nvImageCodec DICOM reader whenever a LoadImage is made, and on a machine without
# nvImageCodec (every CPU machine) says twice, each time, that it falls back to pydicom's decoders, which is
# what this package uses anyway. Only those two notices are silenced.
warnings.filterwarnings(
    "ignore", message=r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register", category=UserWarning
)


# MONAI's surface distances call its own get_mask_edges with an argument it deprecated (1.5), warning on every
# call of ours; and ConfigWorkflow warns that "logging_file" is False where segment passes False on purpose
# (the process's logging is the caller's).
warnings.filterwarnings("ignore", message=r".*always_return_as_numpy.*", category=FutureWarning)


class _DropNotice(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").addFilter(_DropNotice("nvImageCodec is not available"))
logging.getLogger("monai.bundle.workflows").addFilter(_DropNotice("Logging file is set to False"))

_SUBPACKAGES = (
    "apps",
    "bundle",
    "data",
    "engines",
    "errors",
    "handlers",
    "inferers",
    "losses",
    "metrics",
    "networks",
    "threads",
    "transforms",
    "visualize",
)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
