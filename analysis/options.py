"""The command-line options the `analysis` commands share, defined once and checked when they are parsed.

The same flag means the same thing, with the same help, default and bounds, in `heads`, `probe`, `patch`,
`ablate`, `report` and `bench`. Defaults come from `probing.defaults` (the library's signatures use the same
constants). Every value is checked by its argparse `type` or `choices`, so a typo (`--kinds noisin`) or an
impossible number (`--limit 0`) is refused in words (`error: argument --limit: ...`, exit 2) before any
dataset or model loads.

Each function adds one option to a parser (some take the command's own help text where the meaning differs
per command, e.g. what `--limit` counts). Nothing here imports torch, pandas or the library's modules other
than `probing.defaults` (which imports nothing): `--help` of any command answers at once.
"""
from __future__ import annotations

import argparse
import math
import re

from probing import defaults

DATASET_NAMES = ("builtin-coref, builtin-negation, gap-dev, gap-test, gap-validation, winobias, winogender, wsc273, "
                 "blimp-negation, blimp-negation-scope, neg136-simp, neg136-nat, condaqa")

# The smallest value each resampling count accepts, and why. A sign-flip p-value is at least 1/(n_perm + 1), so
# fewer than 1/ALPHA flips could never reach significance; a 95% interval's 2.5% tail needs as many resamples.
MIN_N_PERM = math.ceil(1 / defaults.ALPHA)          # 20
MIN_N_BOOT = math.ceil(1 / defaults.ALPHA)          # 20
MIN_BATCH_TOKENS = 64                               # below this a batch holds less than one short sentence
DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, except where there is none to show (None, a flag's False, an
    empty list) or the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        nothing_to_show = action.default is None or action.default is False or action.default == [] \
            or action.default == argparse.SUPPRESS     # (`in (None, False)` would hide a default of 0 too)
        if nothing_to_show or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


# ---- value types: each turns the text into a value or raises ArgumentTypeError with the reason in words ----

def bounded_int(low: int, high: int | None = None):
    """An argparse type: a whole number from `low` to `high` (inclusive; no upper bound when None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    parse.__name__ = "whole number"            # what argparse names in its own messages
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def comma_choices(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated, non-empty subset of `allowed`, returned as a tuple in the order given
    (repeats dropped); an unknown name is refused with the valid names listed."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        if not names:
            raise argparse.ArgumentTypeError(f"name at least one of {', '.join(allowed)}")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown))}; choose from "
                                             f"{', '.join(allowed)} (comma-separated)")
        return names
    parse.__name__ = "comma-separated names"
    return parse


def comma_ints(low: int):
    """An argparse type: comma-separated whole numbers, each at least `low`, e.g. "1,3,5" -> (1, 3, 5)."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be whole numbers separated by commas, got {text!r}") from None
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"must be whole numbers of at least {low} separated by commas, "
                                             f"got {text!r}")
        return values
    parse.__name__ = "comma-separated whole numbers"
    return parse


def device_name(text: str) -> str:
    """An argparse type: cpu, mps, cuda or cuda:N (whether the GPU exists is checked when the model loads)."""
    if not DEVICE_PATTERN.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N (or mps), got {text!r}")
    return text.strip()


# ---- the shared options ------------------------------------------------------------------------------------

def model(parser: argparse.ArgumentParser, help_text: str = "minilm (default), mpnet, gemma-270m, a hub id or a path"):
    parser.add_argument("--model", default=None, help=help_text)


def data(parser: argparse.ArgumentParser, help_text: str = f"a JSONL file, or a name: {DATASET_NAMES}", **kwargs):
    parser.add_argument("--data", help=help_text, **kwargs)


def data_root(parser: argparse.ArgumentParser):
    parser.add_argument("--data-root", default=None,
                        help="folder holding the real datasets (default: $PROBING_DATA_ROOT or ../shared/data)")


def out(parser: argparse.ArgumentParser, required: bool = True,
        help_text: str = "output folder (made, parents included, when it does not exist)"):
    parser.add_argument("--out", required=required, default=None, help=help_text)


def force(parser: argparse.ArgumentParser, help_text: str = "overwrite results already in --out"):
    parser.add_argument("--force", action="store_true", help=help_text)


def skip_bad(parser: argparse.ArgumentParser):
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad rows instead of failing")


def limit(parser: argparse.ArgumentParser, help_text: str = "use only the first N examples"):
    parser.add_argument("--limit", type=bounded_int(1), default=None, metavar="N",
                        help=f"{help_text}; N >= 1 (default: all)")


def n_boot(parser: argparse.ArgumentParser, help_text: str = "bootstrap resamples for the CIs"):
    parser.add_argument("--n-boot", type=bounded_int(MIN_N_BOOT), default=defaults.N_BOOT,
                        help=f"{help_text}; at least {MIN_N_BOOT}")


def n_perm(parser: argparse.ArgumentParser, help_text: str = "sign flips for the paired test"):
    parser.add_argument("--n-perm", type=bounded_int(MIN_N_PERM), default=defaults.N_PERM,
                        help=f"{help_text}; at least {MIN_N_PERM} (fewer could never give p < {defaults.ALPHA})")


def seed(parser: argparse.ArgumentParser, help_text: str = "seed of the resampling and the random draws"):
    parser.add_argument("--seed", type=bounded_int(0), default=defaults.SEED, help=f"{help_text}; >= 0")


def batch_tokens(parser: argparse.ArgumentParser):
    parser.add_argument("--batch-tokens", type=bounded_int(MIN_BATCH_TOKENS), default=defaults.BATCH_TOKENS,
                        help=f"padded pieces per batch; at least {MIN_BATCH_TOKENS}")


def n_random(parser: argparse.ArgumentParser, help_text: str, default: int):
    parser.add_argument("--n-random", type=bounded_int(1), default=default, help=f"{help_text}; at least 1")


def source_pieces(parser: argparse.ArgumentParser):
    parser.add_argument("--source-pieces", choices=defaults.SOURCE_PIECE_RULES, default=defaults.SOURCE_PIECES,
                        help="how a source of several pieces is read: its last piece, or the mean over its pieces "
                             "(Clark et al.)")


def mention(parser: argparse.ArgumentParser):
    parser.add_argument("--mention", choices=defaults.MENTION_RULES, default=defaults.MENTION,
                        help="a multi-word coreference mention is its last word (head) or the sum over the whole "
                             "span (span, the old rule)")


def device(parser: argparse.ArgumentParser):
    parser.add_argument("--device", type=device_name, default=None, help="cpu (default), cuda or cuda:N")
    parser.add_argument("--dtype", default=None, choices=defaults.DTYPES,
                        help="model weights' dtype (default float32; bfloat16 on a GPU halves memory)")
