"""Small reference networks for tests and benchmarks (as captum.testing has)."""
