"""Command-line verbs for human judging: `debate ui` and `debate judges add|list|revoke|assign`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the Streamlit app on the results folder (loopback unless --host is given).

    On POSIX the Streamlit server replaces this process (exec): it keeps the pid, so the SIGTERM a process
    manager or `kill` sends reaches the server itself, and no orphaned server is left listening.
    """
    env = dict(os.environ, DEBATE_RESULTS=str(Path(args.results).resolve()))
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(args.port),
           "--server.address", args.host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer", "--server.fileWatcherType", "none",
           # an error that escapes the app's own handling shows no traceback to judges or visitors
           "--client.showErrorDetails", "none"]
    print(f"judging app on http://{args.host}:{args.port} (results: {args.results}); Ctrl-C or SIGTERM stops it",
          flush=True)
    if os.name == "posix":
        sys.stderr.flush()
        os.execve(sys.executable, cmd, env)  # does not return
    return subprocess.call(cmd, env=env)  # elsewhere exec spawns a new process anyway; Ctrl-C reaches the child


def cmd_judges(args: argparse.Namespace) -> int:
    from judges.human_queue import HumanQueue
    from debate.store import Store

    queue = HumanQueue(Store(args.results))
    if args.action == "add":
        token = queue.add_judge(args.name, admin=args.admin)
        role = "admin" if args.admin else "judge"
        print(f"{role} {args.name} added. Access token (shown once, only its hash is stored):\n{token}")
    elif args.action == "list":
        for j in queue.judges():
            print(f"{j.name:24s} {'admin' if j.admin else 'judge':6s} {'revoked' if j.revoked else 'active'}")
    elif args.action == "revoke":
        queue.revoke(args.name)
        print(f"{args.name} revoked; their unfinished debates went back to the queue")
    elif args.action == "assign":
        store = queue.store
        ts = [t for t in store.transcripts(args.name, status="complete") if "verdict_only" not in t.tags]
        if args.setting:
            ts = [t for t in ts if t.setting == args.setting]
        ts = ts[: args.limit] if args.limit else ts
        n = queue.enqueue(args.name, ts, args.judges_per_debate, reveal=args.reveal)
        print(f"{n} judging slots queued for {len(ts)} stored debates of run {args.name}")
    return 0


def add_human_verbs(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("ui", help="start the browser app for human judges and admins")
    u.add_argument("--results", default="results")
    u.add_argument("--port", type=int, default=8501)
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    u.set_defaults(func=cmd_ui)

    j = sub.add_parser("judges", help="human judges: add, list, revoke; assign stored debates to the queue")
    j.add_argument("action", choices=["add", "list", "revoke", "assign"])
    j.add_argument("name", nargs="?", default="", help="judge name (add, revoke) or run name (assign)")
    j.add_argument("--admin", action="store_true", help="add: an admin token (leaderboard, answers, queue)")
    j.add_argument("--judges-per-debate", type=int, default=1, help="assign: different judges per debate")
    j.add_argument("--limit", type=int, help="assign: at most N debates")
    j.add_argument("--setting", help="assign: only debates of this setting (e.g. 'human debate')")
    j.add_argument("--reveal", action="store_true", help="assign: show the answer after each verdict")
    j.add_argument("--results", default="results")
    j.set_defaults(func=cmd_judges)
