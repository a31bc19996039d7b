"""`python -m analysis patch`: activation patching of every head (and of its attention pattern) on the minimal
pairs of a dataset; writes effects.csv, summary.json, patching.png and report.md to the output folder."""
from __future__ import annotations

import argparse
import sys

from probing.report.outputs import prepare_out_dir
from probing.report.patching import PATCH_FILES, write_patching_outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a JSONL file or a dataset name with paired rows "
                        "(builtin-negation; twins with meta.twin / meta.twin_role)")
    parser.add_argument("--model", default=None, help="minilm (default), mpnet, gemma-270m, a hub id or a path")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--data-root", default=None, help="folder holding the real datasets")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs (a quick check)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument("--n-perm", type=int, default=10000, help="sign flips for the maxT tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readout", choices=["auto", "embedding", "logits", "all-positions"], default="auto",
                        help="auto (default): the LM's logit difference for NEG-136-style rows when the model has a "
                        "trained LM head, else the sentence embedding over the pieces both texts share; "
                        "all-positions: the embedding over every piece, the swapped word included")
    parser.add_argument("--kinds", default=None, help="comma-separated subset of noising, denoising, "
                        "pattern_noising, pattern_denoising, row_noising, row_denoising (default: all)")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --out")


def _attention_scores(loaded, examples, relation: str, n_boot: int):
    """The heads table's unpaired main score (above_baseline, accuracy) on the same examples, for the correlation."""
    from probing.heads import main_score, score_heads
    scored = score_heads(loaded, [e for e in examples if e.relation == relation], relation=relation,
                         n_boot=min(n_boot, 200), n_perm=200)
    table = scored.table.rename(columns={main_score(relation): "attention_score"})[["layer", "head", "attention_score"]]
    table.attrs["score"] = "attention_score"
    return table


def _pair_key(example) -> str:
    meta = example.meta or {}
    return str(meta.get("twin", meta.get("pair", example.id)))


def run(args: argparse.Namespace) -> int:
    from probing.examples import load_examples
    from probing.models import load_model
    from probing.patching import KINDS, patch_heads
    out = prepare_out_dir(args.out, PATCH_FILES, args.force)
    out.mkdir(parents=True, exist_ok=True)   # prepare_out_dir checks the folder; the writers need it made
    examples = load_examples(args.data, data_root=args.data_root)
    loaded = load_model(args.model)
    if args.limit is not None:
        # the first N pairs (rows sharing meta.pair or meta.twin; an unpaired row is its own pair)
        keys = list(dict.fromkeys(_pair_key(e) for e in examples))[:args.limit]
        examples = [e for e in examples if _pair_key(e) in set(keys)]
    kinds = KINDS if args.kinds is None else tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    relation = examples[0].relation if examples else "negation"
    scores = _attention_scores(loaded, examples, relation, args.n_boot)
    # the correlation uses the attention on the patched pairs themselves (same items); the heads-table score
    # is kept beside it in effects.csv
    result = patch_heads(loaded, examples, kinds=kinds, readout=args.readout, n_boot=args.n_boot,
                         n_perm=args.n_perm, seed=args.seed, progress=True)
    result.table["attention_score"] = scores["attention_score"].to_numpy()
    write_patching_outputs(result, out, args.data)
    gate = result.gate
    print(f"{result.model} | {args.data} | {result.relation} | {len(result.pair_ids)} pairs | skipped {result.skipped}")
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
    print(f"sanity: {result.sanity}")
    print(f"took {result.seconds:.0f} s; wrote {', '.join(str(out / f) for f in PATCH_FILES)}", file=sys.stderr)
    return 0
