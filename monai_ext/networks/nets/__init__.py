from .resunet import ResUNet
from .resunetplusplus import ResUNetPlusPlus
from .unetplusplus import UNetPlusPlus
