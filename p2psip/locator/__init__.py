"""locator layer."""
