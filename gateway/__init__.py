"""The aiohttp application: HTTP API, event hub, stream supervisor, lifecycle and CLI."""
