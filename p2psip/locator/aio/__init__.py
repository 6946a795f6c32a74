"""asyncio front ends of the locators."""
