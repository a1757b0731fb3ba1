"""`python -m alert_handler` runs the command line."""

import sys

from alert_handler.cli.main import main

sys.exit(main())
