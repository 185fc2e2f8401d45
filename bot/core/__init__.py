"""Sans-I/O cores: plain functions from data to data (config, commands, verdicts, YAML surgery,
Job specs, records). They import nothing that does I/O and nothing of the bot outside `bot.core`."""
