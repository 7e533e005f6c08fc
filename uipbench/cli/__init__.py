"""The ``uipbench`` command (console script ``uipbench = "uipbench.cli:main"``).

``main.py`` builds the parser from one module per command group (``dataset``, ``backbones``, ``embed``,
``sweep``, ``mptrj``, ``regress``); each exposes ``register(subparsers)``, which adds its parser(s) and
sets ``func``. ``common.py`` holds what they share: the error → exit-code rule, the checks of output
paths made before any work starts, and shared arguments. Building the parser imports nothing heavy;
each command imports the modules doing its work when it runs.
"""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
