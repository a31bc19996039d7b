"""The command-line options the `analysis` commands share, defined once: the same flag means the same thing, with
the same help and default, in `heads`, `probe`, `patch`, `ablate`, `report` and `bench`.

Each function adds one option to a parser (some take the command's own help text where the meaning differs
per command, e.g. what `--limit` counts). Nothing here imports torch, pandas or the library: `--help` of any
command answers at once.
"""
from __future__ import annotations

import argparse

DATASET_NAMES = ("builtin-coref, builtin-negation, gap-dev, gap-test, gap-validation, winobias, winogender, wsc273, "
                 "blimp-negation, blimp-negation-scope, neg136-simp, neg136-nat, condaqa")


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
    parser.add_argument("--limit", type=int, default=None, help=help_text)


def n_boot(parser: argparse.ArgumentParser, help_text: str = "bootstrap resamples for the CIs"):
    parser.add_argument("--n-boot", type=int, default=1000, help=help_text)


def n_perm(parser: argparse.ArgumentParser, help_text: str = "sign flips for the paired test"):
    parser.add_argument("--n-perm", type=int, default=10000, help=help_text)


def seed(parser: argparse.ArgumentParser, help_text: str = "seed of the resampling and the random draws"):
    parser.add_argument("--seed", type=int, default=0, help=help_text)


def batch_tokens(parser: argparse.ArgumentParser):
    parser.add_argument("--batch-tokens", type=int, default=4096, help="padded pieces per batch")


def device(parser: argparse.ArgumentParser):
    parser.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="model weights' dtype (default float32; bfloat16 on a GPU halves memory)")
