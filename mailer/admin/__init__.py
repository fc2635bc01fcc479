"""The admin web UI: an aiohttp sub-application mounted at /admin/."""
