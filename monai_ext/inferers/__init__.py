from .slice_wise import SliceWiseInferer
from .sliding_window import SlidingWindowInferer
