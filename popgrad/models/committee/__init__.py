"""Two-layer teacher–student models on Gaussian inputs: committee machines (MATH.md §8)."""
