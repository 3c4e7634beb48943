from .dwt import DWT, IDWT, SUPPORTED_MODES, discrete_wavelets, subband_names
