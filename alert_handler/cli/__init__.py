"""The command line: `alert-handler` and its commands."""
