"""``python -m aksmaint_cli``: the same as the ``aksmaint`` command."""

import sys

from aksmaint_cli import main

sys.exit(main())
