"""MONAI extensions for clinical image segmentation: layers, networks, inferers, bundles and apps.

Subpackages load on first use (``monai_ext.transforms.X`` works after ``import monai_ext``, as bundle
config expressions such as ``$monai_ext.bundle.TrainedSettings(@checkpoint)`` need).
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("apps", "bundle", "data", "engines", "handlers", "inferers", "losses", "metrics", "networks", "transforms", "visualize")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
