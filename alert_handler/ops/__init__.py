"""Running the daemon: health, metrics, systemd, the clock, log throttling."""
