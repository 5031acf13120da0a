"""Side-by-side performance harnesses; run each as ``python -m benchmarks.<name>``."""
