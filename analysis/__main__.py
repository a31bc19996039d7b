"""`python -m analysis COMMAND ...`: the command-line entry points.

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> exit code`. Expected
failures (bad data, a model that cannot load, results already present) print one line in words and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "heads": ("analysis.heads", "score every head on a dataset"),
    "probe": ("analysis.probe", "probing classifiers (coref, negation, layers) with baselines and control tasks"),
    "ablate": ("analysis.ablate", "knock out top-k heads vs random heads and measure the effect"),
    "patch": ("analysis.patch", "activation patching of every head and its attention pattern on minimal pairs"),
    "report": ("analysis.report", "heads, probes and ablations for one model in one resumable report"),
    "bench": ("analysis.bench", "time the head scorer against the bare forward pass and a naive loop"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        modules[name] = importlib.import_module(module_name)
        modules[name].add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    import signal
    from probing.report.outputs import OutputExistsError, interrupted_message, sigterm_as_interrupt
    from probing.examples import ExampleError
    from probing.models import ModelLoadError
    previous = signal.getsignal(signal.SIGTERM)
    sigterm_as_interrupt()
    try:
        return modules[args.command].run(args)
    except (ExampleError, ModelLoadError, OutputExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted_message()}", file=sys.stderr)
        return 130
    except RecursionError:
        print("error: the input is nested too deeply to read", file=sys.stderr)
        return 2
    finally:
        # A SIGTERM after this point (interpreter shutdown) ends the process plainly, without a traceback.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
