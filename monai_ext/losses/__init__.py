from .deep_supervision import DeepSupervisionLoss
from .madgnet import MADGNetLoss, madgnet_targets, structure_loss
from .reciprocal import ReciprocalLoss
