"""flops-bot: the machinery the handlers share (see README.md, "Development")."""
