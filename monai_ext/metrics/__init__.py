from .segmentation import boundary_f1, pixel_accuracies, segmentation_metrics, summarise
