"""Runnable pipelines around the ``avepoint_dynamics`` source: the load itself, the CLI and the demo."""
