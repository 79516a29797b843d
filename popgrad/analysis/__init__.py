"""Theory vs Monte Carlo: comparisons of observables with predictions, and their verdicts."""
