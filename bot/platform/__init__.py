"""What the bot runs on: the GitHub App and client, Kubernetes, S3, check runs, comments, the
retry policy, settings, metrics and logs. Imports `bot.core` and `bot.platform` only."""
