from monai_ext.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".attach": ["Attach"],
        ".bundle_checkpoint": ["BundleCheckpointSaver"],
        ".gradient_clipping": ["GradientClipping"],
        ".lr_schedule": ["LrSchedule"],
        ".multi_scale": ["MultiScaleTraining"],
        ".progress": ["TrainingProgress"],
        ".segmentation_report": ["SegmentationReport"],
        ".stop_at_target": ["StopAtTarget"],
        ".summary_writer": ["LazySummaryWriter"],
        ".time_budget": ["BudgetClock", "TimeBudget"],
        ".training_errors": ["TrainingError", "TrainingErrors", "run_training"],
        ".weight_average": ["WeightAverage"],
    },
)
