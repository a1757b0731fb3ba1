"""The settings: the table, the kinds of values, `python -m alert_handler.config`."""
