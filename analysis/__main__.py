"""`python -m analysis COMMAND ...`: the command-line entry points.

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> exit code`; their shared
options are defined once in `analysis.options`, which checks every value as it is parsed (exit 2, in words,
before anything loads). Only the chosen command's module is imported, and the modules
import torch only inside `run`, so `--help` answers at once (with every option's default). Expected failures
(bad data, a model that cannot load, results already present, an --out that cannot be written) print one
line in words and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from analysis import options

COMMANDS = {
    "heads": ("analysis.heads", "score every head on a dataset"),
    "probe": ("analysis.probe", "probing classifiers (coref, negation, layers) with baselines and control tasks"),
    "ablate": ("analysis.ablate", "knock out top-k heads vs random heads and measure the effect"),
    "patch": ("analysis.patch", "activation patching of every head and its attention pattern on minimal pairs"),
    "report": ("analysis.report", "heads, probes and ablations for one model in one resumable report"),
    "bench": ("analysis.bench", "time the head scorer against the bare forward pass and a naive loop"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text,
                                        formatter_class=options.HelpFormatter)
        if name == chosen:                  # the other commands' modules are never imported
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
    try:
        # Every option is checked here (analysis.options: bounded numbers, choices): a bad one is refused in words
        # (exit 2) before any dataset or model loads. `--help` also ends here (exit 0).
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 2
    import signal
    from probing.outputs import OutputExistsError, interrupted_message, sigterm_as_interrupt
    from probing.examples import ExampleError
    from probing.models import ModelLoadError
    previous = signal.getsignal(signal.SIGTERM)
    sigterm_as_interrupt()
    try:
        return module.run(args)
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
