"""pgsweep."""
