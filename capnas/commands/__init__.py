"""One module per CLI command group; each exposes `register(app)`."""

from capnas.commands import eval_cmd, run_cmd, sandbox_cmd, train_cmd, validate_cmd

COMMAND_MODULES = [run_cmd, train_cmd, eval_cmd, validate_cmd, sandbox_cmd]

# report, export and caption (issue 7)
from capnas.commands import caption_cmd, export_cmd, report_cmd  # noqa: E402

COMMAND_MODULES += [report_cmd, export_cmd, caption_cmd]
from capnas.commands import chat_cmd  # noqa: E402  (issue 7: the chat console)
COMMAND_MODULES += [chat_cmd]
