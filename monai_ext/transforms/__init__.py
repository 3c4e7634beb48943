from .diffusion import SplitDiffusionMapsd
