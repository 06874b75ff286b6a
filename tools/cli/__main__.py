"""``python -m hearth.tools.cli``: the ``hearth`` command."""

import sys

from hearth.tools.cli.main import main

sys.exit(main())
