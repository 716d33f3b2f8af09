"""``python -m avepoint_pipelines.cli``: the same as ``avepoint-dynamics``."""

import sys

from .parser import main

sys.exit(main())
