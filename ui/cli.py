"""The `debate` command line: a thin shell over the Python API; verbs mirror it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tournament_config(args: argparse.Namespace):
    from arenas.presets import preset
    from debate.configs import apply_overrides, load_tournament, read_yaml

    if args.config and args.preset:
        raise SystemExit("give either --config or --preset, not both")
    source = args.config or f"preset {args.preset or 'smoke'}"
    data = read_yaml(args.config) if args.config else preset(args.preset or "smoke")
    overrides = list(args.set or [])
    for flag, key in (("questions", "questions.n"), ("results", "results"), ("seed", "seed"), ("address", "ray.address")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.judge == "human":
        data["judge"] = {**(data.get("judge") or {}), "kind": "human", "name": "human"}
    if args.device:
        for p in data.get("policies", []):
            p["device"] = args.device
    apply_overrides(data, overrides)
    return load_tournament(data, source=source)


def cmd_tournament(args: argparse.Namespace) -> int:
    from arenas.report import build_report, format_report, plot_accuracy
    from arenas.tournament import resume_config, run_tournament
    from debate.store import Store

    start = time.perf_counter()
    if args.resume:
        cfg = resume_config(Store(args.results or "results"), args.resume)
        result = run_tournament(cfg, run=args.resume, resume=True, progress=not args.quiet, train_judges=not args.no_train,
                                retry_failed=args.retry_failed)
    else:
        cfg = _tournament_config(args)
        result = run_tournament(cfg, run=args.run, progress=not args.quiet, train_judges=not args.no_train,
                                retry_failed=args.retry_failed)  # refused there without --resume, before anything is stored
    for name, where in result.placement.items():
        print(f"policy {name}: node {where.get('node_id', '')[:12]} ({where.get('node_ip', '')}, host {where.get('host', '')}), "
              f"pid {where.get('pid', '')}")
    if args.retry_failed:
        print(f"retried {result.retried[0]} failed debates and {result.retried[1]} failed judge calls; the failures are "
              f"kept in the store's transcript_failures and verdict_failures tables")
    report = build_report(result.store, result.run)
    print(format_report(report))
    png = plot_accuracy(report, Path(cfg.results) / result.run / "accuracy.png")
    print(f"run {result.run}: {result.played} debates played, {result.judged} judged in this call, "
          f"wall time {time.perf_counter() - start:.1f} s; store {result.store.path}" + (f"; plot {png}" if png else ""))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from arenas.selfplay import run_training, stored_train_config
    from arenas.train_report import format_train_report, plot_training
    from debate.store import Store
    from debate.training.config import train_config

    start = time.perf_counter()
    if args.from_run:
        from arenas.selfplay_offline import offline_update

        cfg = train_config(args.config, args.preset, _train_overrides(args))
        print(offline_update(cfg, args.from_run, judge=args.judge, run=args.run, progress=not args.quiet))
        return 0
    if args.resume:
        store = Store(args.results or "results")
        cfg = replace(stored_train_config(store, args.resume), results=str(store.folder))
        result = run_training(cfg, run=args.resume, resume=True, progress=not args.quiet)
    else:
        cfg = train_config(args.config, args.preset, _train_overrides(args))
        if not args.config:
            from debate.configs import expected_line
            from debate.training.config import PRESET_DIR

            preset = args.preset or "cpu-smoke"
            print(f"training preset {preset}: {expected_line(PRESET_DIR / f'{preset}.yaml')}", flush=True)
        result = run_training(cfg, run=args.run, progress=not args.quiet)
    print(format_train_report(result.store, result.run))
    png = plot_training(result.store, result.run, Path(cfg.results) / result.run / "training.png")
    print(f"run {result.run}: wall time {time.perf_counter() - start:.1f} s; store {result.store.path}" + (f"; plot {png}" if png else ""))
    return 0


def _train_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set or [])
    if args.results:
        overrides.append(f"results={args.results}")
    if args.device:
        overrides.append(f"device={args.device}")
    return overrides


def cmd_report(args: argparse.Namespace) -> int:
    from arenas.report import build_report, format_report, plot_accuracy
    from debate.store import Store

    store = Store(args.results, read_only=True)  # a read: creates no folder, file or table
    if store.run(args.run).kind == "train":
        from arenas.train_report import format_train_report, plot_training

        print(format_train_report(store, args.run))
        png = plot_training(store, args.run, Path(args.results) / args.run / "training.png")
        print(f"plot: {png}" if png else "no plot: no iteration is complete yet")
        return 0
    if store.run(args.run).kind == "import-nyu":
        from arenas.settings_report import format_settings, passage_lengths

        print(format_settings(store, args.run, paper_only=True, judge=args.judge))
        print()
        print(format_settings(store, args.run, paper_only=False, judge=args.judge))
        print()
        print(passage_lengths(store, args.run))
        return 0
    report = build_report(store, args.run, judge=args.judge)
    print(format_report(report))
    from judges.human_queue import HumanQueue

    for row in HumanQueue(store).queue_table(args.run):
        print(f"human judging queue: {row['done']} judged, {row['open']} waiting, {row['in_progress']} in progress, "
              f"{row['expired']} abandoned (back in the queue)")
    png = plot_accuracy(report, Path(args.results) / args.run / "accuracy.png")
    if png:
        print(f"plot: {png}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from debate.export import export_run
    from debate.store import Store

    out = Path(args.out or Path(args.results) / args.run / "export")
    for path in export_run(Store(args.results, read_only=True), args.run, out, args.format):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "engine":
        from debate.bench import bench_engine_on

        bench_engine_on(args.backend, batches=_batch_sizes(args.batch or "16"), max_new_tokens=args.max_new_tokens or 48,
                        model=args.model, repeats=args.repeats, device=args.device, base_url=args.base_url,
                        api_key_env=args.api_key_env)
    elif args.what == "generate":
        import json

        from debate.training.bench_generate import bench_generate

        for questions in _batch_sizes(args.batch or "16"):
            print(json.dumps(bench_generate(model_name=args.model, device=args.device, questions=questions,
                                            samples=args.samples, max_new_tokens=args.max_new_tokens or 40,
                                            repeats=args.repeats, autocast=args.autocast or "auto")), flush=True)
    elif args.what == "train":
        import json

        from debate.training.bench import bench_train

        for batch in _batch_sizes(args.batch or "8"):
            print(json.dumps(bench_train(model_name=args.model, device=args.device, batch=batch, objective=args.objective,
                                         repeats=args.repeats)), flush=True)
    else:
        from judges.bench import bench_judge_train
        from judges.presets import train_config

        layers = train_config(None, "embedded").train_layers if args.train_layers is None else args.train_layers
        for batch in _batch_sizes(args.batch or "4"):
            bench_judge_train(model=args.model, batch_debates=batch, repeats=args.repeats + 1, autocast=args.autocast or "off",
                              train_layers=layers, device=args.device, lower=args.lower_dtype)
    return 0


def _batch_sizes(text: str) -> list[int]:
    from debate.configs import ConfigError

    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch {text!r}: give positive whole numbers separated by commas, e.g. --batch 16,64,256")
    return sizes


def cmd_judge_train(args: argparse.Namespace) -> int:
    from arenas.tournament import ensure_model
    from judges.presets import train_config
    from judges.train import train_judge

    cfg = train_config(args.config, args.preset, args.set or [])
    ensure_model(cfg.base_model, progress=not args.quiet)  # a preset may start from another trained judge
    folder = train_judge(cfg, progress=not args.quiet)
    print(f"judge {cfg.name} stored in {folder}; a tournament names it as `model: judge:{cfg.name}`")
    if not args.no_eval:
        return cmd_judge_eval(argparse.Namespace(name=str(folder), compare_base=args.compare_base, quiet=args.quiet, templated=0))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from arenas.settings_report import format_settings
    from debate.nyu import import_nyu
    from debate.store import Store

    store = Store(args.results)
    summary = import_nyu(args.path, store, run=args.run)
    print(summary.format())
    print()
    print(format_settings(store, args.run, paper_only=True))
    return 0


def cmd_rejudge(args: argparse.Namespace) -> int:
    from arenas.rejudge import rejudge
    from arenas.settings_report import format_settings
    from debate.store import Store

    store = Store(args.results)
    n = rejudge(store, args.run, args.judge, limit=args.limit, setting=args.setting, progress=not args.quiet,
                tag=args.tag)
    print(f"judged {n} transcripts of run {args.run} with {args.judge}")
    print(format_settings(store, args.run, paper_only=False))
    return 0


def cmd_judge_eval(args: argparse.Namespace) -> int:
    import json

    from debate.embedded import judge_dir
    from arenas.judge_eval import evaluate_trained, format_eval

    folder = Path(args.name) if Path(args.name).is_dir() else judge_dir(args.name)
    table = evaluate_trained(str(folder), compare_base=args.compare_base, progress=not args.quiet, templated_questions=args.templated)
    print(format_eval(table, json.loads((folder / "judge.json").read_text())))
    print(f"table saved to {folder / 'eval.csv'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="debate", description="Self-play debate and scalable-oversight harness.")
    sub = parser.add_subparsers(dest="verb", required=True)

    t = sub.add_parser("tournament", help="run or resume a debate tournament", description=(
        "Run a round-robin debate tournament from a YAML config or a built-in preset (default: smoke), "
        "store every transcript and verdict, and print the tables."))
    t.add_argument("--config", help="a tournament YAML file")
    t.add_argument("--preset", help="a built-in preset (smoke)")
    t.add_argument("--resume", metavar="RUN", help="resume a stopped run, skipping what is stored")
    t.add_argument("--run", help="name of the new run (default: NAME-DATE-TIME)")
    t.add_argument("--results", help="results folder (default: results)")
    t.add_argument("--questions", type=int, help="number of questions")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="device of every policy: auto, cpu, cuda")
    t.add_argument("--address", help="Ray cluster address (default: a local ray.init())")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. protocols.0.rounds=1")
    t.add_argument("--judge", choices=["model", "human"], help="human: queue the debates for people in `debate ui`")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--no-train", action="store_true", help="refuse instead of training a trained judge the cache lacks")
    t.add_argument("--retry-failed", action="store_true", help="with --resume: re-run the debates and judge calls stored "
                   "as failed (their failures are kept as history)")
    t.set_defaults(func=cmd_tournament)

    r = sub.add_parser("report", help="print a run's tables from the store")
    r.add_argument("run")
    r.add_argument("--results", default="results")
    r.add_argument("--judge", help="whose verdicts (default: the run's judge)")
    r.set_defaults(func=cmd_report)

    e = sub.add_parser("export", help="write a run's records as Parquet or JSONL for pandas")
    e.add_argument("run")
    e.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    e.add_argument("--results", default="results")
    e.add_argument("--out", help="output folder (default: results/RUN/export)")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="benchmarks, printed as one JSON line with a ratio against a baseline")
    b.add_argument("what", choices=["engine", "generate", "judge-train", "train"])
    b.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda or cuda:N")
    b.add_argument("--batch", help="batch sizes, comma-separated: engine prompts (default 16), generate questions (default "
                   "16, each side --samples times), judge-train debates a step (default 4, each in both orders)")
    b.add_argument("--autocast", default=None, choices=["off", "auto", "bfloat16"],
                   help="judge-train: autocast of the steps (default off: float32, as the preset trains); generate: the "
                   "learner's generate_autocast (default auto: bfloat16 where the hardware runs it natively)")
    b.add_argument("--samples", type=int, default=2, help="generate: speeches per question and side (default 2, as cpu-wide)")
    b.add_argument("--lower-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="judge-train: dtype of the stored lower-layer pass (auto: bfloat16 only where the hardware has it)")
    b.add_argument("--train-layers", type=int, default=None,
                   help="judge-train: train the top N layers on stored lower-layer states (default: the embedded preset's; 0: the whole model)")
    b.add_argument("--objective", default="dpo", help="train: the objective whose update is timed (dpo, ipo, kto, reinforce, ppo)")
    b.add_argument("--max-new-tokens", type=int, default=None, help="engine: default 48; generate: default 40 (the presets')")
    b.add_argument("--repeats", type=int, default=2)
    b.add_argument("--model", default="embedded", help="a model (embedded or a folder); with --backend openai, the server's model name")
    b.add_argument("--backend", default="transformers", choices=["transformers", "vllm", "openai"],
                   help="engine: the backend compared with its own batched call (vllm: LLM.generate, in .venv-vllm; "
                   "openai: direct concurrent requests to --base-url)")
    b.add_argument("--base-url", help="engine --backend openai: the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1")
    b.add_argument("--api-key-env", help="engine --backend openai: the NAME of the environment variable holding the key")
    b.set_defaults(func=cmd_bench)
    tr = sub.add_parser("train", help="train debaters by self-play on a judge's verdicts", description=(
        "Warm-start the debater on templated speeches, fine-tune the reward model on its debates, then run "
        "iterations of self-play rollouts, verdicts, rewards and updates with a held-out evaluation each "
        "iteration; every iteration is checkpointed and `--resume RUN` continues after a kill."))
    tr.add_argument("--config", help="a training YAML file")
    presets = sorted(f.stem for f in (Path(__file__).parents[1] / "debate" / "training" / "presets").glob("*.yaml"))
    tr.add_argument("--preset", help=f"a built-in preset ({', '.join(presets)})")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. iterations=1 or objective=kto")
    tr.add_argument("--resume", metavar="RUN", help="continue a stopped run from its last complete iteration")
    tr.add_argument("--from-run", metavar="RUN", help="one offline update from a stored run's verdicts (a tournament, or people judging in the browser)")
    tr.add_argument("--judge", help="--from-run: whose verdicts are the reward (default: every verdict of the run)")
    tr.add_argument("--run", help="name of the new run (default: NAME-DATE-TIME)")
    tr.add_argument("--results", help="results folder (default: results)")
    tr.add_argument("--device", help="the learner's and judges' device: auto, cpu, cuda")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=cmd_train)

    j = sub.add_parser("judge", help="train and evaluate judges")
    jsub = j.add_subparsers(dest="judge_verb", required=True)
    jt = jsub.add_parser("train", help="train a judge (the reward model) on labelled debates", description=(
        "Train a judge on templated and debater-generated debates over synthetic questions, labelled by the "
        "ground truth, store it under the cache, then evaluate it on held-out questions."))
    jt.add_argument("--config", help="a judge training YAML file")
    jt.add_argument("--preset", help="a built-in preset (embedded)")
    jt.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. epochs=1")
    jt.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    jt.add_argument("--compare-base", action="store_true", help="also evaluate the untrained base model")
    jt.add_argument("--quiet", action="store_true")
    jt.set_defaults(func=cmd_judge_train)
    je = jsub.add_parser("eval", help="evaluate a trained judge on its held-out questions")
    je.add_argument("name", help="the judge's name (or its folder)")
    je.add_argument("--compare-base", action="store_true", help="also evaluate the untrained base model")
    je.add_argument("--templated", type=int, default=0, metavar="N",
                    help="templated and blind held-out questions (default: the judge's test_questions); more narrow the intervals")
    je.add_argument("--quiet", action="store_true")
    je.set_defaults(func=cmd_judge_eval)
    jr = jsub.add_parser("run", help="re-judge a stored run's transcripts (`debate judge RUN --judge SPEC`)", description=(
        "Judge the stored transcripts of RUN with another judge, writing new verdict rows beside the originals."))
    jr.add_argument("run")
    jr.add_argument("--judge", required=True, help="a judge spec YAML (policy and judge sections) or a built-in: embedded, trained-embedded")
    jr.add_argument("--limit", type=int, help="judge at most N transcripts (in id order)")
    jr.add_argument("--setting", help="only transcripts of this setting, e.g. 'human debate'")
    jr.add_argument("--tag", help="only transcripts with this tag, e.g. 'self': a training run's held-out games, "
                                  "whose accuracy by this judge `debate report RUN` then shows per iteration")
    jr.add_argument("--results", default="results")
    jr.add_argument("--quiet", action="store_true")
    jr.set_defaults(func=cmd_rejudge)

    i = sub.add_parser("import", help="import external debates into the store")
    i.add_argument("source", choices=["nyu"])
    i.add_argument("path", help="the NYU debates folder (debates-metadata.jsonl and debates/)")
    i.add_argument("--run", default="nyu")
    i.add_argument("--results", default="results")
    i.set_defaults(func=cmd_import)

    from ui.cache_cli import add_cache_verbs
    from ui.human_cli import add_human_verbs

    add_human_verbs(sub)
    add_cache_verbs(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from debate.configs import ConfigError
    from judges.human_queue import QueueError
    from debate.questions import QuestionFileError
    from debate.store import StoreError

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "judge" and argv[1] not in ("train", "eval", "run", "-h", "--help"):
        argv.insert(1, "run")  # `debate judge RUN --judge SPEC`
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ConfigError, QuestionFileError, StoreError, FileNotFoundError, QueueError) as exc:
        print(f"debate {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        verb = "train" if args.verb == "train" else "tournament"
        print(f"\ninterrupted; everything finished so far is stored. Resume with `debate {verb} --resume RUN`.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
