"""CLI sub-commands of the core, one module each. Every module exposes
`add_parser(subparsers)` and must import torch only inside the command function."""

CORE_COMMANDS = (
    "membench.commands.models",
    "membench.commands.data",
    "membench.commands.run",
    "membench.commands.runs",
    "membench.commands.predict",
    "membench.commands.explain",
    "membench.commands.report",
    "membench.commands.compare",
    "membench.commands.evaluate",
    "membench.commands.bench",
    "membench.commands.weights",
)
