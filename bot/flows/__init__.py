"""The work: the lifecycle of the bot's Jobs and each flow (builds, deploys, regression, federated
runs, trust). Imports `bot.core`, `bot.platform` and `bot.flows`, never `aiohttp.web`; handlers
reach everything through here."""
