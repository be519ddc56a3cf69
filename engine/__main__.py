"""`python -m engine` is the same as the `teredo-engine` command."""

import sys

from engine.launch import main

sys.exit(main())
