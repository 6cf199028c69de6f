"""The `simfed` command: run | validate | report | compare | devices | calibrate | models | data.

Commands that only read configuration (validate, devices, models, data list) never import torch:
the runner and the learning code are imported inside `run`. A user error (`SimfedError`)
prints its lines on stderr and exits with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from simfed import __version__
from simfed.errors import SimfedError

INTERRUPTED = 130  # exit status after Ctrl-C, as shells report SIGINT


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix (DataError, ModelCardError, ScenarioError, ...)."""
    return (SimfedError,)


def _console():
    from simfed.run.progress import output_console

    return output_console()


# ---------------------------------------------------------------- run / validate / report

def _terminate_as_interrupt() -> None:
    """SIGTERM (a `kill`, a job scheduler's time limit) ends a run like Ctrl-C does: the run
    directory is closed with status "interrupted" and everything measured so far is kept."""

    def interrupt(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _resume_target(args: argparse.Namespace) -> Path:
    """`simfed run --resume RUN_DIR`: the run directory, checked; its resolved scenario is the scenario."""
    if args.scenario or args.set or args.seed is not None or args.out:
        raise SimfedError("simfed run --resume RUN_DIR takes no scenario, --set, --seed or --out: "
                          "the run goes on with the scenario it was started with")
    run_dir = Path(args.resume)
    if not (run_dir / "scenario.resolved.yaml").is_file():
        raise SimfedError(f"{run_dir}: not a run directory (no scenario.resolved.yaml)")
    return run_dir


def cmd_run(args: argparse.Namespace) -> int:
    from simfed.config import load_scenario

    resume = _resume_target(args) if args.resume else None
    if resume is not None:
        scenario = load_scenario(resume / "scenario.resolved.yaml")
    elif not args.scenario:
        raise SimfedError("simfed run: give a scenario file (or --resume RUN_DIR)")
    else:
        overrides = list(args.set)
        if args.seed is not None:
            overrides.append(f"seeds=[{args.seed}]")
        scenario = load_scenario(args.scenario, overrides)
    out_root = Path(args.out) if args.out else Path(scenario.output.dir)

    from simfed.run.progress import ProgressView
    from simfed.report.readers import summarize_metrics
    from simfed.run.runner import run_scenario  # torch comes in here, and only here

    names = [m.name for m in scenario.methods]
    _terminate_as_interrupt()
    with ProgressView(names, scenario.world.server.rounds, enabled=not args.quiet) as view:
        try:
            resuming = {"resume": resume} if resume is not None else {}
            result = run_scenario(scenario, out_root, scenario.seeds, [view], **resuming)
        except KeyboardInterrupt as exc:
            run_dir = getattr(exc, "run_dir", None)
            print("interrupted" + (f"; results so far in {run_dir}" if run_dir else ""),
                  file=sys.stderr)
            if run_dir:
                print(run_dir)
            return INTERRUPTED
        except BaseException as exc:
            run_dir = getattr(exc, "run_dir", None)
            if run_dir:
                print(f"run failed; results so far in {run_dir}", file=sys.stderr)
            raise
    run_dir = Path(getattr(result, "path", result))
    view.print_comparison(summarize_metrics(run_dir))
    print(run_dir)
    return 0


def _check_model_card(scenario: Any) -> None:
    """Fail validation early on an unknown model card (the card module imports no torch)."""
    try:
        from simfed.learn.model_card import load_card
    except ImportError:
        return
    try:
        load_card(scenario.model)
    except SimfedError as exc:
        raise SimfedError(f"{scenario.where('model')}: model: {exc}") from None


def cmd_validate(args: argparse.Namespace) -> int:
    from simfed.config import load_scenario

    scenario = load_scenario(args.scenario, args.set)
    _check_model_card(scenario)
    print(f"ok: {scenario.describe()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from simfed.report.plots import plot_run
    from simfed.run.progress import ProgressView
    from simfed.report.readers import read_summary, summarize_metrics

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise SimfedError(f"{run_dir}: not a run directory (no metrics.csv)")
    status = read_summary(run_dir).get("status", "unknown")
    view = ProgressView([], 0, enabled=False)
    view.print_comparison(summarize_metrics(run_dir))
    markdown, csv_text = _run_report(run_dir, status)
    print(markdown)
    (run_dir / "report.md").write_text(markdown, encoding="utf-8")
    (run_dir / "report.csv").write_text(csv_text, encoding="utf-8")
    for path in [run_dir / "report.md", run_dir / "report.csv", *plot_run(run_dir)]:
        print(path)
    print(f"status: {status}")
    return 0


def _run_name(run_dir: Path) -> str:
    """The scenario a run directory belongs to (summary.json, else the parent folder's name)."""
    from simfed.report.readers import read_summary

    return str(read_summary(run_dir).get("scenario") or run_dir.resolve().parent.name)


def _device_names(run_dir: Path) -> dict[str, str]:
    """Device id → `id:user` from the run's resolved scenario (ids alone if it cannot be read)."""
    try:
        import yaml

        from simfed.data.federated import _user_names
        from simfed.data.spec import DataSpec

        doc = yaml.safe_load((run_dir / "scenario.resolved.yaml").read_text(encoding="utf-8"))
        spec = DataSpec.model_validate(doc["data"])
        names = _user_names(spec)
        n = sum(int(g["count"]) for g in doc["world"]["fleet"])
        return {str(i): f"{i}:{names[i % len(names)]}" for i in range(n)}
    except Exception:  # a report never fails for want of labels
        return {}


_TABLE_NOTE = ("Final test perplexity: at each seed's last evaluation, the mean over devices of each "
               "device's perplexity; mean (sample std) over seeds; best of each column in bold.")


_TARGETS_NOTE = ("The first evaluation whose mean test perplexity is at or below the target (scenario "
                 "report.targets; default: the worst final mean among methods that trained): simulated "
                 "time, cumulative bytes and device energy then; mean (sample std) over the seeds that "
                 "reached it. Per device: summary.json's time_to_target.")


def _run_report(run_dir: Path, status: str) -> tuple[str, str]:
    """report.md and report.csv of one run: the method table, then the per-device table."""
    from simfed.report.tables import build_table, device_table, seeds_note, to_csv, to_markdown
    from simfed.report.targets import run_targets
    from simfed.report.targets import to_markdown as targets_markdown
    from simfed.report.readers import read_metrics

    rows = read_metrics(run_dir)
    name = _run_name(run_dir)
    table = build_table([(name, rows)])
    devices = device_table(rows, _device_names(run_dir))
    markdown = "\n".join([
        f"# {name}: final test perplexity",
        "",
        f"Run `{run_dir}` (status: {status}; {seeds_note(table)}). "
        f"Regenerate: `simfed report {run_dir}`.",
        "",
        to_markdown(table),
        _TABLE_NOTE,
        "",
        "## Per device",
        "",
        to_markdown(devices),
        *_paired_sections(rows),
        "",
        "## Time to target",
        "",
        _TARGETS_NOTE,
        "",
        targets_markdown(run_targets(run_dir)),
    ])
    from simfed.report.setting import setting_markdown
    from simfed.report.readers import read_summary

    setting = setting_markdown(read_summary(run_dir))
    if setting:
        markdown += "\n\n" + setting
    return markdown, to_csv(table)


def _paired_sections(rows: list) -> list[str]:
    """report.md's paired tests over (seed, device) and the evaluation's standard errors
    (simfed/report/stats.py)."""
    from simfed.report.stats import paired_markdown, standard_error_markdown

    return ["## Paired tests", "", paired_markdown(rows), "## Evaluation precision", "",
            standard_error_markdown(rows)]


def cmd_export(args: argparse.Namespace) -> int:
    from simfed.api import export

    for folder in export(args.run_dir, args.method, args.out, args.device, args.seed, args.merged):
        print(folder)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from simfed.report.tables import build_table, seeds_note, to_csv, to_markdown
    from simfed.report.readers import read_metrics

    runs = [Path(p) for p in args.run_dirs]
    for run_dir in runs:
        if not (run_dir / "metrics.csv").is_file():
            raise SimfedError(f"{run_dir}: not a run directory (no metrics.csv)")
    names = [_run_name(r) for r in runs]
    # two runs of one scenario: tell them apart by their directory's name
    labels = [n if names.count(n) == 1 else f"{n} ({r.name})" for n, r in zip(names, runs)]
    table = build_table([(label, read_metrics(r)) for label, r in zip(labels, runs)])
    command = "simfed compare " + " ".join(str(r) for r in runs)
    markdown = "\n".join([
        to_markdown(table),
        _TABLE_NOTE,
        f"Seeds: {seeds_note(table)}.",
        "",
        "Regenerate: `" + command + (f" --out {args.out}`" if args.out else "`"),
        "",
    ])
    print(markdown)
    if args.out:
        stem = Path(args.out)
        if stem.suffix in (".md", ".csv"):
            stem = stem.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        md_path, csv_path = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".csv")
        md_path.write_text(markdown, encoding="utf-8")
        csv_path.write_text(to_csv(table), encoding="utf-8")
        print(md_path)
        print(csv_path)
    return 0


# ---------------------------------------------------------------- devices / models

def _profile_table(title: str, profiles: dict[str, Any]):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=True)
    rows = list(profiles.values())
    if not rows:
        return table
    names = [f.name for f in dataclasses.fields(rows[0])]
    for name in names:
        table.add_column(name, overflow="fold",
                         justify="left" if name in ("name", "source") else "right")
    for profile in rows:
        table.add_row(*(_cell(getattr(profile, name), name) for name in names))
    return table


def _cell(value: Any, name: str = "") -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(_cell(v, name) for v in value)
    if name.endswith("_bytes") and isinstance(value, (int, float)):
        from simfed.run.progress import human_bytes

        return human_bytes(value)
    if name == "flops_per_s" and isinstance(value, (int, float)):
        return f"{value / 1e9:.3g} GFLOP/s"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def cmd_devices(args: argparse.Namespace) -> int:
    from simfed.sim.profiles import load_links, load_tiers

    console = _console()
    console.print(_profile_table("device tiers (simfed/profiles/tiers.yaml)", load_tiers()))
    console.print(_profile_table("links (simfed/profiles/links.yaml)", load_links()))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    try:
        from simfed.learn.model_card import list_cards
    except ImportError:
        raise SimfedError("simfed models: model cards are not available in this build "
                          "(simfed.learn.model_card is missing)") from None
    from rich.table import Table

    table = Table(title="model cards", title_justify="left")
    for header in ("name", "description", "source"):
        table.add_column(header, overflow="fold")
    for card in list_cards():
        table.add_row(card.name, getattr(card, "description", ""), _describe_source(card))
    _console().print(table)
    return 0


def _describe_source(card: Any) -> str:
    source = getattr(card, "source", None)
    if source is None or isinstance(source, str):
        return source or ""
    parts = [getattr(source, "kind", "")]
    for key in ("package", "file", "id", "path_env"):
        value = getattr(source, key, None)
        if value:
            parts.append(f"{key}={value}")
    return " ".join(p for p in parts if p)


# ---------------------------------------------------------------- data

def _corpora():
    try:
        from simfed.data import corpora
    except ImportError as exc:
        if exc.name and exc.name.startswith("simfed.data"):
            raise SimfedError("simfed data: the corpus builder is not available in this build "
                              "(simfed.data.corpora is missing)") from None
        raise
    return corpora


def cmd_data_build(args: argparse.Namespace) -> int:
    corpora = _corpora()
    report = corpora.build_builtin_corpus(cache_dir=args.cache_dir, sources=args.sources or None,
                                          console_log=print)
    if report is not None:
        print(report)
        failed = getattr(report, "failed", [])
        if failed:  # not fatal: a scenario that needs a missing source says so when it loads
            print(f"{len(failed)} source(s) could not be built: "
                  f"{', '.join(r.name for r in failed)}", file=sys.stderr)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    rows = _corpora().describe_corpus(args.cache_dir)  # [(source, documents, characters, status)]
    table = Table(title="built-in corpus", title_justify="left")
    for header in ("source", "documents", "characters", "status"):
        table.add_column(header, justify="right" if header in ("documents", "characters") else "left",
                         overflow="fold")
    for source, docs, chars, status in rows:
        table.add_row(str(source), f"{docs:,}", f"{chars:,}", str(status))
    _console().print(table)
    return 0


# ---------------------------------------------------------------- calibrate

def cmd_calibrate(args: argparse.Namespace) -> int:
    """Time real local steps here, fit this host (FLOP/s, and with shapes of different expert
    counts an activation bandwidth), write it as a user tier; with --check KIND[:RANK] ..., predict
    those held-out methods' step times from the fit and measure them."""
    from simfed.run import calibrate as cal  # torch comes in here

    def parse(items: list[str]) -> list[tuple[str, int | None]]:
        out = []
        for item in items:
            kind, _, rank = item.partition(":")
            out.append((kind, int(rank) if rank else args.rank))
        return out

    model = cal.load_adapted(args.model, args.device, args.threads)
    common = dict(steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, seq_len=args.seq_len,
                  threads=args.threads)
    basis_specs, checks = parse(args.method), parse(args.check)
    measured = cal.measure_many(model, args.model, [*basis_specs, *checks], **common)  # interleaved
    basis, others = measured[:len(basis_specs)], measured[len(basis_specs):]
    fit = cal.fit_host(basis)
    for m in basis:
        print(f"{args.model} {m.kind} rank {m.rank}, batch {m.batch_size} x {m.seq_len} on {m.device} "
              f"({m.threads} threads): {m.flops / 1e9:.3f} GFLOP + {m.activation_bytes / 1e9:.3f} GB activations "
              f"per step, median {m.median_s * 1e3:.1f} ms over {len(m.times_s)} steps")
    bandwidth = (f", {fit.activation_bytes_per_s / 1e9:.2f} GB/s activation bandwidth"
                 if fit.activation_bytes_per_s > 0 else " (all-in: one shape kind, no bandwidth term)")
    print(f"fit: {fit.flops_per_s / 1e9:.2f} GFLOP/s effective{bandwidth}")
    for m in basis:
        predicted, actual, error = cal.check_prediction(fit, m)
        print(f"  fitted {m.kind} rank {m.rank}: model {predicted * 1e3:.1f} ms vs {actual * 1e3:.1f} ms ({error:+.1%})")
    out = Path(args.out) if args.out else cal.DEFAULT_TIERS_FILE
    path = cal.write_tier(out, args.tier, cal.tier_row(fit, basis))
    print(f"tier {args.tier!r} written to {path} (use it with SIMFED_PROFILES={path})")
    for other in others:  # held out of the fit, timed interleaved with it
        predicted, actual, error = cal.check_prediction(fit, other)
        print(f"  held out {other.kind} rank {other.rank}: predicted {predicted * 1e3:.1f} ms, "
              f"measured {actual * 1e3:.1f} ms ({error:+.1%})")
    return 0


# ---------------------------------------------------------------- parser

def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a scenario value before validation, e.g. "
                        "--set world.server.deadline_s=60 --set methods.0.rank=4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simfed",
        description="Discrete-event simulator for federated on-device fine-tuning of LMs.")
    parser.add_argument("--version", action="version", version=f"simfed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a scenario: every method × seed; prints the run directory last")
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.add_argument("--out", help="root of run directories (default: the scenario's output.dir)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a killed or interrupted run from its last completed round "
                        "(in RUN_DIR, with the scenario it was started with)")
    _add_set(p)
    p.add_argument("--seed", type=int, help="run this seed only (replaces the scenario's seeds)")
    p.add_argument("--quiet", action="store_true",
                   help="plain one-line-per-round progress instead of the live table")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a scenario without running it")
    p.add_argument("scenario", help="scenario YAML file")
    _add_set(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="comparison table and plots of a run directory")
    p.add_argument("run_dir", help="a directory written by `simfed run`")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="several runs in one table (rows = methods, columns = runs' scenarios)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by `simfed run`")
    p.add_argument("--out", help="write the table to OUT.md and OUT.csv (a .md/.csv suffix is dropped)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="a device's trained model as a PEFT adapter folder "
                                      "(needs a run with output.save_models)")
    p.add_argument("run_dir", help="a directory written by `simfed run`")
    p.add_argument("--method", required=True, help="the method's name in the scenario")
    p.add_argument("--device", type=int, help="one device (OUT is its folder); default every device (OUT/device-<d>/)")
    p.add_argument("--seed", type=int, help="default: the run's first seed")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--merged", action="store_true",
                   help="also OUT/merged/: the base model with the adapter merged (single-LoRA methods)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("devices", help="the built-in device tiers and links, with their sources")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("calibrate", help="measure local steps on this host, fit its effective FLOP/s, "
                                         "write it as a user device tier")
    p.add_argument("--model", required=True, help="model card name, e.g. smollm2-135m")
    p.add_argument("--method", required=True, nargs="+", metavar="KIND[:RANK]",
                   help="method shapes whose steps are timed and fitted: comigs (1G1S), comigs-1g3s, hetlora, "
                        "fedavg; two with different expert counts also fit an activation bandwidth, e.g. "
                        "--method fedavg comigs-1g3s")
    p.add_argument("--rank", type=int, help="LoRA rank (default: 8; hetlora 16)")
    p.add_argument("--steps", type=int, default=7, help="timed steps; the median is used (default 7)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tier", default="this_host", help="name of the written tier (default this_host)")
    p.add_argument("--out", help="user tiers file (default ~/.config/simfed/tiers.yaml)")
    p.add_argument("--check", nargs="*", default=[], metavar="KIND[:RANK]",
                   help="also measure these methods and compare with the FLOPs model's prediction")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("models", help="the model cards")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="the offline built-in corpus")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    b = data.add_parser("build", help="build (or complete) the built-in corpus in the cache")
    b.add_argument("--sources", nargs="+", metavar="NAME", help="only these built-in sources")
    b.add_argument("--cache-dir", type=Path, help="default: $SIMFED_CACHE or ~/.cache/simfed")
    b.set_defaults(func=cmd_data_build)
    ls = data.add_parser("list", help="what the cache holds")
    ls.add_argument("--cache-dir", type=Path, help="default: $SIMFED_CACHE or ~/.cache/simfed")
    ls.set_defaults(func=cmd_data_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(str(exc), file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
