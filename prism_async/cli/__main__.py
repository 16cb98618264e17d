"""``python -m prism_async.cli``: the command line."""

import sys

from . import main

sys.exit(main())
