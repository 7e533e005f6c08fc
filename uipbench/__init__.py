"""uipbench: benchmark universal interatomic potentials and Δ-correct them on their own embeddings."""
__version__ = "0.1.0"
