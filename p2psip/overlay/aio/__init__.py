"""asyncio adapters of the overlay layer (sockets, tasks and timers live here)."""
