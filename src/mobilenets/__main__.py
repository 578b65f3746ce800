"""``python -m mobilenets``: the same as the ``mobilenets`` command."""

import sys

from .cli import main

sys.exit(main())
