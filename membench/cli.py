"""`membench`: the command line. Errors a user can fix print one line and exit 2;
`--debug` shows the traceback instead."""

from __future__ import annotations

import argparse
import importlib
import sys

from membench import __version__
from membench.errors import MembenchError, StopRequested

EPILOG = """examples:
  membench models
  membench params ours amnet --format csv
  membench run --model resnet50-lamem --splits all --data demo --preset smoke
  membench run --model ours --splits 1,3 --data /data/lamem --device cuda
  membench report --leaderboard leaderboards
"""


def build_parser() -> argparse.ArgumentParser:
    from membench import plugins
    from membench.commands import CORE_COMMANDS

    parser = argparse.ArgumentParser(
        prog="membench", description="Benchmark image-memorability models on LaMem and friends.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"membench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in CORE_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # a command not built yet
            raise
        module.add_parser(sub)
    pm = plugins.load()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:  # one broken plugin must not take the whole CLI down
            impl.function(sub)
        except Exception as exc:
            plugins._fail(pm.get_name(impl.plugin), exc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        code = int(args.func(args) or 0)
        _warn_plugin_failures()
        return code
    except MembenchError as exc:
        if debug:
            raise
        _warn_plugin_failures()
        print(f"membench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `membench plugins | head`
        sys.stderr.close()
        return 0
    except StopRequested as exc:  # Ctrl-C in training, after a checkpoint was saved
        print(f"membench: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if debug:
            raise
        print("membench: interrupted; `membench run ... --resume` continues from the last saved "
              "checkpoint", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permissions, a file vanishing: the user's to fix
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"membench: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def _warn_plugin_failures() -> None:
    from membench import plugins

    for name, reason in plugins.failures:
        print(f"membench: warning: plugin {name} failed to load: {reason}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
