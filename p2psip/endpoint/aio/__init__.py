"""endpoint/aio layer."""
