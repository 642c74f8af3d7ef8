"""Non-interactive subcommands of ``rwkv-tui``; one module per subcommand.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
They must not import Textual: scripts should start fast and work without a terminal.
"""

COMMAND_MODULES = (
    "tui.commands.generate",
    "tui.commands.music",
    "tui.commands.quantize",
    "tui.commands.state",
    "tui.commands.models",
)
