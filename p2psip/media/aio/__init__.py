"""asyncio adapters of the media layer (sockets, ICE, audio devices)."""
