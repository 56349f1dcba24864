"""`membench`: the command line. Errors a user can fix print one line and exit 2;
`--debug` shows the traceback instead."""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
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


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: a did-you-mean for a mistyped choice, command
    or option, and a pointer to --help instead of the usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {self._suggest(message)}; see `{self.prog} --help`\n")

    def _suggest(self, message: str) -> str:
        m = _INVALID_CHOICE.match(message)
        if m:
            choices = [c.strip().strip("'\"") for c in m["choices"].split(",")]
            got = m["got"]
            close = difflib.get_close_matches(got, choices, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"argument {m['arg']}: invalid choice {got!r}{hint} (choose from {', '.join(choices)})"
        m = _UNRECOGNIZED.match(message)
        if m:
            known = sorted(self._all_option_strings())
            parts = []
            for token in m["args"].split():
                flag = token.split("=")[0]
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag.startswith("--") else []
                parts.append(f"{token} (did you mean {close[0]}?)" if close else token)
            return "unrecognized arguments: " + " ".join(parts)
        return message

    def _all_option_strings(self) -> set[str]:
        found = set(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found |= sub._all_option_strings() if isinstance(sub, Parser) else set(sub._option_string_actions)
        return found


# "argument --preset: invalid choice: 'papr' (choose from 'paper', 'smoke')" (3.10-3.11; later
# Pythons drop the quotes around the choices)
_INVALID_CHOICE = re.compile(r"argument (?P<arg>[^:]+): invalid choice: '(?P<got>[^']*)' \(choose from (?P<choices>.*)\)$")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<args>.*)$")


def build_parser() -> argparse.ArgumentParser:
    from membench import plugins
    from membench.commands import CORE_COMMANDS

    parser = Parser(
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
    plugins.call_each("register_commands", subparsers=lambda _name: sub)  # a broken plugin is reported
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
