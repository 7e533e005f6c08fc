"""The DFT reference datasets: ``load(system)``, ``load_validation(system)``, ``train_test_split``, ``validate``."""
from .io import DatasetError, load, load_card, load_validation, train_test_split, validate

__all__ = ["DatasetError", "load", "load_card", "load_validation", "train_test_split", "validate"]
