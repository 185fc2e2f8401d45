"""The process: the aiohttp service (webhook intake, dispatch, health, readiness, metrics) and the
App-registration page."""
