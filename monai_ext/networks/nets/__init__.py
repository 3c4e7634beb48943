from .madgnet import MADGNet
from .resnest import ResNeSt
from .resunet import ResUNet
from .resunetplusplus import ResUNetPlusPlus
from .unetplusplus import UNetPlusPlus
