"""`python -m alert_handler.config --markdown` prints docs/configuration.md."""

import sys

from alert_handler.config.table import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
