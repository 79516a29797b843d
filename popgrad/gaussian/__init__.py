"""Gaussian calculus of activations: the whitelist parser, stack programs, closed-form families, the
catalogue, Hermite coefficients and two-scale dual kernels (the evaluate side)."""
