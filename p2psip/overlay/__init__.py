"""overlay layer."""
