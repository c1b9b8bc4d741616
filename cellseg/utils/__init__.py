"""What every layer may use: atomic file writes, the scalars of a run's log."""
