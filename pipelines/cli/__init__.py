"""The ``avepoint-dynamics`` command line: its parser, its commands, the console output, the demo."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
