"""The DFT reference datasets: ``load(system)``, ``train_test_split``, ``validate``."""
from .io import DatasetError, load, load_card, train_test_split, validate

__all__ = ["DatasetError", "load", "load_card", "train_test_split", "validate"]
