"""Training both stages: options, state and checkpoints, the loops."""
