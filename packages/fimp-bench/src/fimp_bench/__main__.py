"""``python -m fimp_bench`` = the ``fimp-bench`` command."""

import sys

from fimp_bench.cli import main

sys.exit(main())
