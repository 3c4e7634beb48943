from .dct_attention import (
    FCANET_TOP_FREQUENCIES,
    MultiFrequencyChannelAttention,
    MultiSpectralChannelAttention,
    dct_basis,
    dct_frequencies,
)
from .dwt import DWT, IDWT, SUPPORTED_MODES, discrete_wavelets, subband_names
from .ff_parser import FFParser
