"""LibreNMS alert handler: force CPEs whose dialer port is down into 'down' and recover them."""

__version__ = "0.1.0"
