"""`python -m analysis probe --task coref|negation|layers`: probing classifiers with baselines and controls.

Parses the arguments, loads the data, calls `probing.probes` (coref_probe, negation_probe, layer_probe) and
`probing.report.probes` (the files; see its docstring for what each task writes), publishes them whole with
their completion marker last (`probing.outputs.write_complete`), and prints a summary.

--data means, per task: coref - each value is evaluated on its own ("gap" = train gap-dev, tune C on
gap-validation, test gap-test; any other name or JSONL = grouped k-fold); negation - all values are pooled
(train on --train-cue sentences, test on the other cue forms); layers - all values are pooled and split by
relation (negation and coreference probes).
"""
from __future__ import annotations

import argparse
import sys
import time

from analysis import options

DEFAULT_DATA = {"coref": ["gap", "builtin-coref"], "negation": ["builtin-negation"],
                "layers": ["builtin-negation", "blimp-npi-licensing", "builtin-coref"]}
GAP_SPLITS = ("gap-dev", "gap-validation", "gap-test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=["coref", "negation", "layers"],
                        help="coref: attention-only antecedent probe; negation: cue-type transfer on adjacent word "
                             "pairs; layers: hidden-state probe per layer, with an adverb-vs-adverb control")
    parser.add_argument("--data", action="append", default=None,
                        help="repeatable. coref: each value evaluated separately ('gap' = dev/validation/test; "
                             "others grouped k-fold); negation, layers: pooled. Defaults: coref gap + builtin-coref; "
                             "negation builtin-negation; layers builtin-negation + blimp-npi-licensing + builtin-coref")
    options.model(parser)
    options.out(parser)
    options.data_root(parser)
    options.skip_bad(parser)
    options.limit(parser, "use only the first N examples of each dataset")
    parser.add_argument("--folds", type=options.bounded_int(2), default=5,
                        help="grouped cross-validation folds; at least 2")
    options.n_boot(parser, "bootstrap resamples (of groups) for the CIs")
    options.seed(parser, "seed of the bootstrap and the control labels")
    options.batch_tokens(parser)
    parser.add_argument("--train-cue", default="not", help="negation: the cue form the probe is trained on")
    parser.add_argument("--group-by", default=None,
                        help="meta key whose value defines the coreference CV groups (default: the library's "
                             "per-dataset default, e.g. occupation for winogender, else meta['group'])")
    options.force(parser)


def run(args: argparse.Namespace) -> int:
    from probing.outputs import prepare_out_dir, write_complete
    from probing.report.probes import expected_files
    data = args.data or DEFAULT_DATA[args.task]
    out = prepare_out_dir(args.out, expected_files(args.task, data), args.force)
    runner = {"coref": run_coref, "negation": run_negation, "layers": run_layers}[args.task]

    def produce(staging):
        from probing.models import load_model
        return runner(load_model(args.model), data, staging, args)

    # The files depend on the data (one per coreference set): every file the runner wrote is published.
    written = write_complete(out, None, produce)
    print(f"wrote {', '.join(str(out / f) for f in written)}")
    return 0


def _load(name: str, args) -> list:
    from probing.examples import load_examples
    examples = load_examples(name, data_root=args.data_root, skip_bad=args.skip_bad, limit=args.limit)
    report = examples.report
    print(report.summary(), file=sys.stderr)
    return examples


def _common(args) -> dict:
    return dict(n_folds=args.folds, n_boot=args.n_boot, seed=args.seed, batch_tokens=args.batch_tokens, progress=True)


def run_coref(loaded, data: list[str], out, args) -> list[str]:
    from probing.probes import coref_probe
    from probing.report.probes import write_coref_report
    results, seconds = {}, {}
    for name in data:
        t0 = time.time()
        if name == "gap":
            train, validation, test = (_load(split, args) for split in GAP_SPLITS)
            result = coref_probe(loaded, train, test=test, validation=validation, **_common(args),
                                 data="train gap-dev, tune C on gap-validation, test gap-test")
        else:
            result = coref_probe(loaded, _load(name, args), group_by=args.group_by, data=name, **_common(args))
        seconds[name] = round(time.time() - t0, 1)
        results[name] = result
        print(f"coref probe on {name}: accuracy {result.accuracy.mean:.3f}, control train "
              f"{result.control_train_accuracy:.3f} / test {result.control_accuracy.mean:.3f}, selectivity "
              f"{result.selectivity.mean:+.3f} [{result.selectivity.ci_low:+.3f}, {result.selectivity.ci_high:+.3f}]"
              f"{'' if result.beats_control else ' (does NOT beat its control)'} ({seconds[name]} s)", file=sys.stderr)
    return write_coref_report(out, results, loaded.name, seconds)


def run_negation(loaded, data: list[str], out, args) -> list[str]:
    from probing.probes import negation_probe
    from probing.report.probes import write_negation_report
    started = time.time()
    examples = [e for name in data for e in _load(name, args) if e.relation == "negation"]
    result = negation_probe(loaded, examples, train_cue=args.train_cue, data=" + ".join(data), **_common(args))
    for name, e in result.results.items():
        if e["n_sentences"]:
            print(f"negation probe {name}: top-1 {e['probe_top1'].mean:.3f} (chance {e['chance'].mean:.3f}), control "
                  f"train {e['control_train_top1']:.3f} / test {e['control_top1'].mean:.3f}, selectivity "
                  f"{e['selectivity'].mean:+.3f}{'' if e['beats_control'] else ' (does NOT beat its control)'}",
                  file=sys.stderr)
    return write_negation_report(out, result, round(time.time() - started, 1))


def run_layers(loaded, data: list[str], out, args) -> list[str]:
    from probing.probes import layer_probe
    from probing.report.probes import write_layers_report
    examples = [e for name in data for e in _load(name, args)]
    results, seconds = {}, {}
    for task in ("negation", "coreference"):
        if not any(e.relation == task for e in examples):
            continue
        t0 = time.time()
        results[task] = layer_probe(loaded, examples, task=task, group_by=args.group_by, **_common(args))
        seconds[task] = round(time.time() - t0, 1)
        print(f"layer probe ({task}) done in {seconds[task]} s", file=sys.stderr)
    if not results:
        raise ValueError("the layer probe found neither negation nor coreference examples in --data")
    return write_layers_report(out, results, loaded.name, data, seconds)
