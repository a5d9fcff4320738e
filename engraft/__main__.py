"""``python -m engraft`` is the ``engraft`` command."""

import sys

from engraft.cli import main

sys.exit(main())
