"""High availability: one lease in Redis decides which daemon changes LibreNMS (HA_REDIS_URL)."""
