"""A TensorBoard ``SummaryWriter`` that creates its event file on the first value written.

PyTorch's writer creates ``events.out.tfevents...`` when it is constructed, so a training that stops before
its first iteration (a bad setting, a broken case) leaves an empty event file beside the run, which
TensorBoard lists as a run with nothing in it. Give this one to MONAI's ``TensorBoardStatsHandler``
(``summary_writer``) instead of a ``log_dir``: nothing is written until there is something to write, and
the writer is closed (flushed) when the process exits, as the handler does for a writer of its own.
"""

from __future__ import annotations

import atexit
import weakref

from torch.utils.tensorboard import SummaryWriter

__all__ = ["LazySummaryWriter"]


class LazySummaryWriter(SummaryWriter):
    """``torch.utils.tensorboard.SummaryWriter`` (same arguments) whose event file appears with its first value."""

    def __init__(self, *args, **kwargs) -> None:
        self._deferred = True
        super().__init__(*args, **kwargs)  # its last step asks for the file writer: deferred
        self._deferred = False
        atexit.register(_close, weakref.ref(self))

    def _get_file_writer(self):
        if self._deferred:
            return None
        return super()._get_file_writer()


def _close(ref: "weakref.ref[LazySummaryWriter]") -> None:
    writer = ref()
    if writer is not None:
        writer.close()
