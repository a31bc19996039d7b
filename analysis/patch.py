"""`python -m analysis patch`: activation patching of every head (and of its attention pattern) on the minimal
pairs of a dataset; writes effects.csv, summary.json, patching.png and report.md to the output folder, and with
--sets also sets.csv (heads patched together against layer-matched random sets) and its report section; all
published whole with the completion marker last (`probing.outputs.write_complete`). Under `accelerate launch`
with several processes the pairs are split across them (`engine.run_pairs`) and only the main process writes."""
from __future__ import annotations

import argparse
import sys

from analysis import options
from probing import defaults

SETS_FILE = "sets.csv"
# probing.patching.readouts.READOUTS, spelt out so that parsing loads no torch (tests/test_cli.py checks they agree)
READOUT_CHOICES = defaults.READOUTS + ("sentence", "probe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.data(parser, "a JSONL file or a dataset name with paired rows (builtin-negation; twins with meta.twin / "
                 "meta.twin_role; NEG-136; Winogender for a decoder); repeat it to patch several sets as one "
                 "(e.g. --data neg136-simp --data neg136-nat)", required=True, action="append")
    options.model(parser)
    options.out(parser)
    options.data_root(parser)
    options.limit(parser, "use only the first N pairs (a quick check)")
    options.n_boot(parser)
    options.n_perm(parser, "sign flips for the maxT tests")
    options.seed(parser)
    parser.add_argument("--readout", choices=READOUT_CHOICES, default=READOUT_CHOICES[0],
                        help="auto (default): the LM's logit difference for NEG-136-style rows and, for a decoder, "
                        "Winogender's profession -> pronoun contexts (Vig et al. 2020), when the model has a trained "
                        "LM head, else the embedding over the pieces both texts share; all-positions: the embedding "
                        "over every piece; sentence: the model's normalised output (mean over every piece, length "
                        "1); probe: the mean over every piece projected on a negation direction, a linear probe "
                        "trained on CD-SCO sentences (--probe-split), disjoint from the patched pairs")
    parser.add_argument("--probe-split", choices=("train", "dev", "test"), default="train",
                        help="the CD-SCO split the probe readout's negation direction is trained on (default: train; "
                        "read under --data-root)")
    parser.add_argument("--no-paths", action="store_true",
                        help="skip path patching: by default the named heads and the top 3 per kind (noising, "
                        "denoising) get their direct effect (every later attention head frozen at its own run's "
                        "value, MLPs recomputed, as in Wang et al. 2022) and their indirect effect through later "
                        "heads")
    parser.add_argument("--kinds", type=options.comma_choices(defaults.PATCH_KINDS), default=None,
                        help=f"comma-separated subset of {', '.join(defaults.PATCH_KINDS)} (default: all)")
    parser.add_argument("--method", choices=defaults.PATCH_METHODS, default=defaults.PATCH_METHODS[0],
                        help="exact: every head patched; attribution: first-order estimates from one forward and one "
                        "backward pass per pair, no head named; screen: estimates, then exact patching of the top "
                        "heads and a random sample of the rest (estimate and exact side by side)")
    parser.add_argument("--sets", action="store_true", help="also patch head sets together: the top-k by attention "
                        "score, the top-k by single-head effect and each whole layer, against layer-matched random "
                        "sets of k heads (noising, denoising); writes sets.csv")
    parser.add_argument("--set-sizes", type=options.comma_ints(1), default=(1, 3, 5),
                        help="comma-separated set sizes k for --sets, each at least 1 (default: 1,3,5)")
    options.n_random(parser, "random sets per chosen set for --sets", defaults.N_RANDOM)
    options.force(parser)


def _attention_scores(loaded, examples, relation: str, n_boot: int):
    """The heads table's headline score on the same examples (negation with controls: the paired difference, the
    attention minus the matched control's; else above_baseline or accuracy): ranks the attention-chosen head
    sets, and is kept beside the effects."""
    from probing.heads import score_heads
    scored = score_heads(loaded, [e for e in examples if e.relation == relation], relation=relation,
                         n_boot=min(n_boot, 200), n_perm=200)
    table = scored.table.rename(columns={scored.main_score: "attention_score"})[["layer", "head", "attention_score"]]
    table.attrs["score"] = "attention_score"
    return table


def _data_name(names: list[str]) -> str:
    return " + ".join(names)


def _pair_key(example) -> str:
    """The pair a row belongs to: meta.twin, else meta.pair; an unpaired row is its own pair."""
    meta = example.meta or {}
    return str(meta.get("twin", meta.get("pair", example.id)))


def run(args: argparse.Namespace) -> int:
    from probing.outputs import prepare_out_dir, write_complete
    from probing.report.patching import PATCH_FILES
    # every option's value was checked when parsed (analysis.options); here only how they combine, still before
    # any model loads
    sizes = args.set_sizes if args.sets else ()
    if args.sets and args.method == "attribution":
        raise ValueError("--sets ranks heads by exact single-head effects: use --method exact or screen, "
                         "not attribution")
    from probing.parallel import is_main_process, launched_in_parallel
    files = PATCH_FILES + ([SETS_FILE] if args.sets else [])
    out = prepare_out_dir(args.out, files, args.force)
    # every process computes the same result from all shards; only the main one publishes it
    main_process = not launched_in_parallel() or is_main_process()
    result, sets = write_complete(out, files, lambda staging: _patch(args, staging, sizes),
                                  publish_result=main_process)
    if not main_process:
        return 0
    _print_summary(result, _data_name(args.data), sets)
    print(f"took {result.seconds:.0f} s; wrote {', '.join(str(out / f) for f in files)}", file=sys.stderr)
    return 0


def _patch(args: argparse.Namespace, staging, sizes: tuple[int, ...]):
    """Load, patch every head (and the head sets when asked), and write the files into the staging folder;
    returns the patching result and the head sets (None without --sets)."""
    from probing.examples import first_keeping_partners, load_examples
    from probing.models import load_model
    from probing.patching import KINDS, patch_heads
    from probing.patching.readouts import check_probe_readout
    from probing.report.patching import write_patching_outputs
    examples = [e for name in args.data for e in load_examples(name, data_root=args.data_root)]
    loaded = load_model(args.model)
    examples = first_keeping_partners(examples, args.limit, unit=_pair_key)     # the first N pairs, each whole
    kinds = KINDS if args.kinds is None else args.kinds
    relation = examples[0].relation if examples else "negation"
    direction = None
    check_probe_readout(examples, args.readout)       # before the probe's direction is fitted
    if args.readout == "probe":
        from probing.patching.direction import cdsco_direction
        direction = cdsco_direction(loaded, data_root=args.data_root, split=args.probe_split)
        print(f"probe direction: {direction.source}; held-out accuracy {direction.accuracy:.3f}", file=sys.stderr)
    scores = _attention_scores(loaded, examples, relation, args.n_boot)
    # the correlation uses the attention on the patched pairs themselves (same items); the heads-table score
    # is kept beside it in effects.csv
    result = patch_heads(loaded, examples, kinds=kinds, readout=args.readout, n_boot=args.n_boot,
                         n_perm=args.n_perm, seed=args.seed, progress=True, method=args.method,
                         direction=direction, paths=not args.no_paths, data_root=args.data_root)
    if direction is not None:
        result.notes.append(f"probe direction: {direction.source}; held-out accuracy {direction.accuracy:.3f}")
    result.table["attention_score"] = scores["attention_score"].to_numpy()
    write_patching_outputs(result, staging, _data_name(args.data))
    if not args.sets:
        return result, None
    from probing.outputs import atomic_write, write_text
    from probing.patching.sets import patch_head_sets
    from probing.report.patching import head_sets_markdown
    sets = patch_head_sets(loaded, examples, k=sizes, n_random=args.n_random, seed=args.seed, result=result,
                           attention_scores=scores, readout=args.readout, n_boot=args.n_boot, progress=True,
                           direction=direction, data_root=args.data_root)
    atomic_write(staging / SETS_FILE, lambda tmp: sets.table.to_csv(tmp, index=False, float_format="%.6g"))
    write_text(staging / "report.md", (staging / "report.md").read_text() + "\n" + head_sets_markdown(sets))
    return result, sets


def _print_summary(result, data: str, sets=None) -> None:
    gate = result.gate
    print(f"{result.model} | {data} | {result.relation} | {len(result.pair_ids)} pairs | skipped {result.skipped}")
    print(f"readout: {result.readout}")
    print(f"gate: {'passed' if gate['passed'] else 'FAILED'} ({gate['clean_minus_corrupt']:.3f} "
          f"[{gate['ci'][0]:.3f}, {gate['ci'][1]:.3f}]"
          + (f", vs control {gate['relation_minus_control']:+.3f} [{gate['relation_minus_control_ci'][0]:+.3f}, "
             f"{gate['relation_minus_control_ci'][1]:+.3f}]" if "control_mean" in gate else "") + ")")
    for kind in (k for k in ("noising", "denoising") if k in result.per_pair):
        top = ", ".join(f"{l}-{h} ({v:+.3f})" for l, h, v in result.ranked(kind, 5))
        print(f"top {kind}: {top}; named: {', '.join(f'{l}-{h}' for l, h in result.named[kind]) or 'none'}")
        if kind in result.correlation:
            c = result.correlation[kind]
            print(f"attention vs {kind}, within-layer Spearman {c['spearman']:+.3f} "
                  f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]")
    for kind, agreement in result.screen.get("by_kind", {}).items():
        print(f"screen {kind}: estimate vs exact over {agreement['n_heads_compared']} heads patched exactly: "
              f"Spearman {agreement['spearman']:+.3f}, exact top 5 in estimate top 10: {agreement['top5_in_top10']}"
              + (f"; missed {', '.join(f'{l}-{h}' for l, h in agreement['missed_by_estimate'])}"
                 if agreement["missed_by_estimate"] else "")
              + f"; largest exact effect among random heads {agreement['largest_exact_among_random']:+.3f}")
    print(f"sanity: {result.sanity}")
    if sets is not None:
        for row in sets.table[sets.table["selection"] != "layer"].itertuples():
            print(f"set {row.kind} top-{row.k} by {row.selection} ({row.heads}): {row.effect:+.3f} "
                  f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]; random median {row.random_median:+.3f}; "
                  + (f"rank in layer {row.ranks_in_layer}" if row.test == "rank" else
                     f"p_random {row.p_random:.3g}, p_holm {row.p_holm:.3g}, could detect >= {row.detectable:.3f}"))
