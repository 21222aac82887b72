"""One module per CLI command group; each exposes `register(app)`. The order is the order of `capnas --help`."""

from capnas.commands import (caption_cmd, chat_cmd, eval_cmd, export_cmd, lemur_cmd, plan_cmd, report_cmd, run_cmd,
                             sandbox_cmd, train_cmd, validate_cmd)

COMMAND_MODULES = [run_cmd, chat_cmd, plan_cmd, report_cmd, export_cmd, caption_cmd, train_cmd, eval_cmd, validate_cmd,
                   lemur_cmd, sandbox_cmd]
