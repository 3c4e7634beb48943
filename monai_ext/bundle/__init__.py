"""Bundle support: training settings checked and planned, trained settings carried by checkpoints, and export
of a self-contained bundle.

``export`` loads on first use (it imports more than a bundle config needs).
"""

from .checks import SettingError, check_training_settings
from .plan import show_plan
from .trained import (
    SETTINGS_FILE,
    SettingsMismatch,
    TrainedSettings,
    check_fits,
    differing_settings,
    load_state,
    read_record,
    record_of,
    with_record,
)


def __getattr__(name):
    if name in ("export_bundle", "ExportError"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
