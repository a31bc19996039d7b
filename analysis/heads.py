"""`python -m analysis heads`: score every head on a dataset and write heads.csv, summary.json, heatmap.png
and report.md to the output folder, then its completion marker `.done.json` (see `probing.outputs`): the
files are made in a private staging folder and moved in together, so a killed run leaves either the previous
complete result or files that no reader trusts."""
from __future__ import annotations

import argparse

from analysis import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.data(parser, required=True)
    parser.add_argument("--relation", choices=["coreference", "negation"],
                        help="score only this relation (default: the data's single relation)")
    options.model(parser)
    options.out(parser)
    options.data_root(parser)
    options.skip_bad(parser)
    options.limit(parser)
    parser.add_argument("--renormalize", action="store_true",
                        help="drop attention to special tokens and renormalise rows before scoring")
    options.batch_tokens(parser)
    options.n_boot(parser)
    options.n_perm(parser)
    options.device(parser)
    options.mention(parser)
    parser.add_argument("--by", action="append", default=[], metavar="KEY",
                        help="also report the head table per value of meta[KEY] (repeatable); cue form, "
                             "next_is_predicate, category, stereotype and type are stratified when present")
    options.source_pieces(parser)
    parser.add_argument("--confirm", action="store_true",
                        help="choose heads on the set's exploration half and test them on held-out sets "
                             "(builtin-negation, builtin-coref, gap-dev); writes confirm.json and confirm.md")
    parser.add_argument("--target", choices=["next-word", "negated-word"], default="next-word",
                        help="with --confirm on negation: the target word, the word after the cue (default) or the "
                             "negated word, the head of the negated predicate (builtin-negation, then CD-SCO's "
                             "gold test stories; or cd-sco-dev, then the test stories)")
    options.force(parser)


def run(args: argparse.Namespace) -> int:
    if args.target != "next-word" and not args.confirm:
        raise ValueError(f"--target {args.target} goes with --confirm (the head table scores the data's own target)")
    if args.confirm:
        from probing.report.confirm import confirm_command
        return confirm_command(args)
    from probing.outputs import prepare_out_dir, write_complete
    from probing.parallel import is_main_process, launched_in_parallel
    from probing.report.heads import HEAD_FILES, run_heads, summary_text
    out = prepare_out_dir(args.out, HEAD_FILES, args.force)
    # Under `accelerate launch` with several processes the examples are split across them.
    parallel = launched_in_parallel()
    main_process = not parallel or is_main_process()

    def produce(staging):
        return run_heads(args.model, args.data, staging, relation=args.relation, data_root=args.data_root,
                         skip_bad=args.skip_bad, limit=args.limit, renormalize=args.renormalize,
                         batch_tokens=args.batch_tokens, n_boot=args.n_boot, n_perm=args.n_perm, progress=True,
                         device=args.device, dtype=args.dtype, parallel=parallel,
                         mention=args.mention, by=args.by, source_pieces=args.source_pieces)

    # Only the main process writes files; the others score their shard and publish nothing. Every file the run
    # wrote is published: HEAD_FILES, and one heatmap-<task>.png per task after the main one (one panel each).
    summary = write_complete(out, None, produce, publish_result=main_process)
    if main_process:
        print(summary_text(summary))
        written = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
        print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
