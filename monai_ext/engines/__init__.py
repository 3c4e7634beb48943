from .pgan import ParallelGANTrainer
