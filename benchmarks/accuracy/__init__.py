"""Accuracy experiments: what a setting or recipe reaches in a fixed time or number of steps, against a named
reference trained in the same run (the training plan, learning curves, the synthetic 5-minute task)."""
