"""`python -m alert_handler.sim poll|serve`: the simulator's command lines (`sim.command`)."""

import sys

from alert_handler.sim.command import main

sys.exit(main())
