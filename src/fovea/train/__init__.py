"""Training: the loop, optimizers, learning-rate schedules, checkpoints and run directories."""
