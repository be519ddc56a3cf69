"""`python -m engine` is the same as the `teredo-engine` command."""

import sys

from engine.cli import main

sys.exit(main())
