"""The LibreNMS API v0 client."""
