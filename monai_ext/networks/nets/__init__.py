from .higmisnet import HiGMISGenerator, HiGMISnet, PairedPatchDiscriminator
from .madgnet import MADGNet
from .medsegdiff import MedSegDiff
from .resnest import ResNeSt
from .resunet import ResUNet
from .resunetplusplus import ResUNetPlusPlus
from .unetplusplus import UNetPlusPlus
