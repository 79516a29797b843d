"""Model-free numerical building blocks: random streams, Chebyshev interpolation, small linear algebra,
compile-time specialised kernels."""
