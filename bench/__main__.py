"""``python -m bench``: the benchmark's command (``bench.cli``); ``--child SPEC`` runs one contender.

A contender's process imports the child side only (``bench.child``): the parent's modules (scenarios,
rendering, the harness) would sit in the memory measured for the contender.
"""

import sys

if sys.argv[1:2] == ["--child"] and len(sys.argv) == 3:
    from bench.child import child_main

    sys.exit(child_main(sys.argv[2]))

from bench.cli import main

sys.exit(main())
