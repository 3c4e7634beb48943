from .augmentation import SpatialAugmentd
from .diffusion import SplitDiffusionMapsd
from .geometry import CheckSameGeometryd
from .intensity import IntensityNormalizationd
from .invert import InvertLabelsd
from .io import LoadImageSeriesd
