"""`python -m fleet ...` is the `fleet` command (how `fleet demo` starts its children)."""

import sys

from fleet.cli import main

sys.exit(main())
