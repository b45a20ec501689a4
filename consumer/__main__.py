"""``python -m consumer`` is the same as ``asset-sync``."""

import sys

from consumer.cli import main

sys.exit(main())
