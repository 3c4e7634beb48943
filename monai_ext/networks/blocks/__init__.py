from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".dct_attention": [
            "FCANET_TOP_FREQUENCIES",
            "MultiFrequencyChannelAttention",
            "MultiSpectralChannelAttention",
            "dct_basis",
            "dct_frequencies",
        ],
        ".dwt": ["DWT", "IDWT", "SUPPORTED_MODES", "discrete_wavelets", "subband_names"],
        ".ff_parser": ["FFParser"],
    },
)
