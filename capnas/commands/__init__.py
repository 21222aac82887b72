"""One module per CLI command group; each exposes `register(app)`."""

from capnas.commands import eval_cmd, sandbox_cmd, validate_cmd

COMMAND_MODULES = [eval_cmd, validate_cmd, sandbox_cmd]
