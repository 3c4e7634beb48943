from .augmentation import SpatialAugmentd
from .diffusion import SplitDiffusionMapsd
from .geometry import CheckSameGeometryd
from .intensity import IntensityNormalizationd
from .io import LoadImageSeriesd
from .invert import InvertLabelsd
