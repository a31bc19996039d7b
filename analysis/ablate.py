"""`python -m analysis ablate`: knock out the top-k negation and coreference heads (and the top-k by raw
attention) and layer-matched random heads; writes ablation.json, ablation.csv, ablation.png and ablation.md,
published whole with their completion marker last (`probing.outputs.write_complete`).

The heads are chosen on data other than the evaluation data: the built-in sets are split by group (negation:
the pair; coreference: the sentence frame) into a half that scores the heads and a half that evaluates the
ablation; NEG-136 is only evaluated. `--heads negation=heads.csv,coreference=heads.csv` uses given tables instead
(then every group is evaluated: say where the tables came from)."""
from __future__ import annotations

import argparse
import hashlib
import sys

from analysis import options
from probing import defaults

RAW_SCORE = "mean_attention"
DATA = {"negation": ["builtin-negation"], "coreference": ["builtin-coref"]}
EVALUATION_ONLY = ["neg136-simp", "neg136-nat"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.model(parser)
    parser.add_argument("--k", type=options.bounded_int(1), default=3, help="heads knocked out per set; at least 1")
    parser.add_argument("--draws", type=options.bounded_int(1), default=defaults.N_DRAWS,
                        help="layer-matched random sets per head set; at least 1")
    parser.add_argument("--mode", choices=defaults.ABLATION_MODES, default=defaults.ABLATION_MODE,
                        help="zero: the head's z is set to 0; mean: to its mean over the texts")
    parser.add_argument("--heads", type=given_table_paths, default=None, help="given heads tables instead of the "
                        "split: negation=PATH,coreference=PATH (heads.csv files of `analysis heads`)")
    options.seed(parser, "seed of the random head sets and bootstraps")
    options.n_boot(parser)
    options.limit(parser, "use only the first N groups of each set (a quick check, not a result)")
    options.data_root(parser)
    options.out(parser)
    options.force(parser)


def group_of(example) -> str:
    meta = example.meta or {}
    return str(meta.get("pair", meta.get("group", example.id)))


def ranking_half(group: str) -> bool:
    """A fixed, seed-free split of groups into two halves (a hash, so adding data does not move old groups)."""
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % 2 == 0


def _first_groups(examples, limit):
    """The examples of the first `limit` groups (pair, else group, else the example itself), each group whole."""
    from probing.examples import first_keeping_partners
    return first_keeping_partners(examples, limit, unit=group_of)


def given_table_paths(text: str) -> dict[str, str]:
    """`--heads negation=PATH,coreference=PATH` as {relation: path}, checked when the arguments are parsed (the
    tables are read later, in `_given_tables`)."""
    paths = {}
    for item in text.split(","):
        relation, _, path = item.partition("=")
        if relation.strip() not in DATA or not path.strip():
            raise argparse.ArgumentTypeError(f"takes negation=PATH,coreference=PATH, got {item!r}")
        paths[relation.strip()] = path.strip()
    return paths


def _given_tables(paths: dict[str, str]) -> dict:
    import pandas as pd
    return {relation: pd.read_csv(path) for relation, path in paths.items()}


def top_heads(table, by: str, k: int) -> tuple[tuple[int, int], ...]:
    """The k heads with the highest `by` (ties broken by layer, then head)."""
    if by not in table:
        raise ValueError(f"the heads table has no {by!r} column")
    ranked = table.sort_values([by, "layer", "head"], ascending=[False, True, True], kind="stable")
    return tuple((int(r.layer), int(r.head)) for r in ranked.head(k).itertuples())


def run(args: argparse.Namespace) -> int:
    from probing.outputs import prepare_out_dir, write_complete
    from probing.report.ablation import ABLATION_FILES
    out = prepare_out_dir(args.out, ABLATION_FILES, args.force)
    result = write_complete(out, ABLATION_FILES, lambda staging: _ablate(args, staging))
    for row in result.table.itertuples():
        print(f"{row.head_set} | {row.measure}: {row.verdict}")
    for reason in result.skipped.values():
        print(f"skipped: {reason}")
    print(f"took {result.seconds:.0f} s; wrote {', '.join(str(out / f) for f in ABLATION_FILES)}", file=sys.stderr)
    return 0


def _ablate(args: argparse.Namespace, staging):
    """Choose the head sets, knock them out, and write the files into the staging folder; returns the result."""
    from probing.ablation import HeadSet, ablate
    from probing.examples import ExampleError, load_examples
    from probing.heads import main_score, score_heads
    from probing.models import load_model
    from probing.report.ablation import write_ablation_outputs
    loaded = load_model(args.model)
    given = _given_tables(args.heads) if args.heads else {}
    evaluation, sources, tables = [], {}, {}
    for relation, names in DATA.items():
        for name in names:
            examples = load_examples(name, data_root=args.data_root)
            if relation == "coreference":   # the measures need a distractor: exactly two candidates
                examples = [e for e in examples if e.candidate_spans and len(e.candidate_spans) == 2]
            examples = _first_groups(examples, args.limit)
            if relation in given:
                sources[relation] = "given: " + ",".join(f"{r}={p}" for r, p in args.heads.items())
                tables[relation] = given[relation]
                evaluation += examples
                continue
            rank = [e for e in examples if ranking_half(group_of(e))]
            evaluation += [e for e in examples if not ranking_half(group_of(e))]
            print(f"scoring {relation} heads on half of {name} ({len(rank)} rows) ...", file=sys.stderr)
            tables[relation] = score_heads(loaded, rank, relation=relation, n_boot=100, n_perm=100).table
            sources[relation] = f"score_heads on the {len(rank)} rows of {name} in the ranking half (hash of the group)"
    skipped_data = []
    for name in EVALUATION_ONLY:
        try:
            evaluation += _first_groups(load_examples(name, data_root=args.data_root), args.limit)
        except ExampleError as err:
            skipped_data.append(f"{name}: {err}")
    head_sets = []
    for relation, table in tables.items():
        head_sets.append(HeadSet(f"{relation} top-{args.k} by {main_score(relation)}", relation,
                                 top_heads(table, main_score(relation), args.k), chosen_by=sources[relation]))
        # the raw-attention set gets its effect and CI but no random draws of its own (they double the runtime)
        head_sets.append(HeadSet(f"{relation} top-{args.k} by {RAW_SCORE}", relation,
                                 top_heads(table, RAW_SCORE, args.k), random=False, chosen_by=sources[relation]))
    result = ablate(loaded, evaluation, head_sets=head_sets, draws=args.draws, mode=args.mode, seed=args.seed,
                    n_boot=args.n_boot, progress=True)
    for note in skipped_data:
        result.skipped[note.split(":")[0]] = f"not evaluated: {note}"
    selection = ("heads chosen on given tables" if given else
                 "heads chosen on one half of each built-in set's groups, the ablation evaluated on the other "
                 "half and on NEG-136 (never used for choosing)")
    write_ablation_outputs(result, staging, {"selection": selection, "ranking_sources": sources})
    return result
