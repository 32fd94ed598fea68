"""Ferry's demo: a good push goes live and is proven, a bad push is rolled back, and on a
blue/green service a bad push never takes production traffic.

Run through sandbox/run, which builds the release binaries and passes their directory in
FERRY_BIN_DIR. Everything happens in the local sandbox (sandbox/ferry_sandbox.py): the three
functions are the release binaries running under a local Lambda Runtime API, AWS is the
emulator. Exits 0 when the story ended as it should: the good image live and SUCCEEDED, the
bad one ROLLED_BACK, the last good image live again, the team told each step.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferry_sandbox as fs  # noqa: E402

CONFIG = """\
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }]
targets = [{ region = "eu-west-1", cluster = "shop-staging" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]          # the task also runs an envoy proxy sidecar, which never changes
# test_url: the route to green, while a blue/green deployment tests it
health = { url = "https://api.{env}.shop.example/healthz", test_url = "https://test.api.{env}.shop.example/healthz", attempts = 3, interval_seconds = 1 }
"""

TTY = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
BOLD, DIM, RED, GREEN, YELLOW, RESET = (
    ("\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[33m", "\033[0m") if TTY else ("",) * 6
)
OUT = threading.Lock()


class Spinner:
    """A progress line for a wait, redrawn in place on a terminal (silent otherwise)."""

    def __init__(self, what: str):
        self.what, self.stop, self.start = what, threading.Event(), time.perf_counter()

    def __enter__(self):
        if TTY:
            threading.Thread(target=self._spin, daemon=True).start()
        return self

    def _spin(self) -> None:
        for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            if self.stop.wait(0.1):
                break
            with OUT:
                sys.stdout.write(f"\r{DIM}{frame} {self.what} {time.perf_counter() - self.start:4.1f} s{RESET}\033[K")
                sys.stdout.flush()

    def __exit__(self, *exc) -> None:
        self.stop.set()
        with OUT:
            if TTY:
                sys.stdout.write("\r\033[K")
            sys.stdout.flush()


def say(line: str = "") -> None:
    with OUT:
        if TTY:
            sys.stdout.write("\r\033[K")
        print(line, flush=True)


def slack_card(message: dict) -> list[str]:
    """A Slack Block Kit message, drawn the way Slack lays it out (text only)."""
    lines = []
    for block in message.get("blocks", []):
        if block["type"] == "header":
            lines.append(f"{BOLD}{block['text']['text']}{RESET}")
        elif block["type"] == "section" and "fields" in block:
            fields = [f["text"].replace("*", "").replace("\n", ": ", 1) for f in block["fields"]]
            lines += ["   ".join(fields[i:i + 2]) for i in range(0, len(fields), 2)]
        elif block["type"] == "section":
            lines += block["text"]["text"].replace("*", "").split("\n")
    width = max(60, shutil.get_terminal_size((120, 40)).columns - 20)
    return [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


def show(record: fs.Record) -> None:
    t = f"{DIM}{record.at:6.2f}s{RESET}"
    if record.kind == "push":
        say(f"{t}  {BOLD}{record.text}{RESET}")
    elif record.kind == "event":
        say(f"{t}  event   {record.text}")
    elif record.kind == "ecs":
        say(f"{t}  ECS     {record.text}")
    elif record.kind == "invoke":
        result = record.data
        if not result:
            say(f"{t}  {RED}{record.text}{RESET}")
            return
        colour = GREEN if result["ok"] else RED
        say(f"{t}  lambda  ferry-{result['function']} → {colour}{fs.outcome_of(result['body'])}{RESET}"
            f" {DIM}({result['seconds'] * 1000:.0f} ms){RESET}")
    elif record.kind == "slack":
        card = slack_card(record.data)
        say(f"{t}  Slack   ┌─ to the team's webhook")
        for line in card:
            say(f"{' ' * 17}│ {line}")
        say(f"{' ' * 17}└─")


def ledger(sandbox: fs.Sandbox) -> None:
    say(f"\n{BOLD}The ledger (DynamoDB){RESET}")
    say(f"  {'created':20} {'tag':18} {'digest':14} {'state':13} reason")
    for d in sandbox.deployments():
        state = d["state"]
        colour = GREEN if state == "SUCCEEDED" else RED if state in ("FAILED", "ROLLED_BACK", "ROLLBACK_FAILED") else YELLOW
        reason = d.get("reason", "")
        say(f"  {d['created_at'][:19]:20} {d['tag']:18} {fs.short(d['digest']):14} "
            f"{colour}{state:13}{RESET} {reason[:90] + ('…' if len(reason) > 90 else '')}")
    say()


def main() -> int:
    bin_dir = Path(os.environ["FERRY_BIN_DIR"])
    work = Path(tempfile.mkdtemp(prefix="ferry-sandbox-"))
    say(f"{BOLD}Ferry sandbox{RESET}: ferry-deploy, ferry-verify and ferry-rollback (release builds) under a local\n"
        "Lambda Runtime API; ECS, ECR, DynamoDB, SNS, Secrets Manager and EventBridge emulated on a loopback port.\n")
    with Spinner("starting the emulated AWS world"):
        sandbox = fs.Sandbox(bin_dir, work, on_record=show)
        sandbox.load(CONFIG)
    t = sandbox.target("shop-staging-api")
    say(f"World: cluster shop-staging (eu-west-1), service shop-staging-api (containers: api + envoy proxy\n"
        f"sidecar), ECR repository shop/api, Ferry's ledger, SNS topic and Slack webhooks. Config:\n")
    for line in CONFIG.splitlines():
        say(f"  {DIM}{line}{RESET}")
    ok = True
    try:
        say(f"\n{BOLD}1. A good image{RESET}\n")
        good = sandbox.push("shop/api", "staging-1a2b3c4d")
        with Spinner("deploying, rolling out, smoke-testing"):
            sandbox.settle()
        ledger(sandbox)

        say(f"{BOLD}2. A bad image: it starts, but its health URL answers 503{RESET}\n")
        bad = sandbox.push("shop/api", "staging-5e6f7a8b", health="unhealthy")
        with Spinner("deploying, rolling out, smoke-testing, rolling back"):
            sandbox.settle()
        ledger(sandbox)

        live = sandbox.live_images(t)
        say(f"{BOLD}Live now{RESET}: api = …@{fs.short(live['api'])}, proxy = {live['proxy']}\n")

        say(f"{BOLD}3. The team switches the service to ECS blue/green, Ferry as its lifecycle hook; "
            f"the bad image again, under a new tag{RESET}\n")
        sandbox.blue_green(t)
        again = sandbox.push("shop/api", "staging-9c0d1e2f", health="unhealthy")
        with Spinner("green beside blue, its test route probed by Ferry's hook, ECS rolling back"):
            sandbox.settle()
        ledger(sandbox)
        arn = sandbox.service(t)["serviceArn"]
        green = [r for r, rev in fs.ferry_moto.SERVICE_REVISIONS.items() if f"/{t.service}/" in r
                 and any(i.endswith(again) for i in sandbox.images_of(t.account, t.region, rev["taskDefinition"]))]
        peak = max((w.get(r, 0) for _, w in sandbox.traffic.of(arn) for r in green), default=0)
        say(f"{BOLD}Production traffic the bad green ever took{RESET}: {peak:g}%\n")
        live = sandbox.live_images(t)
        history = sandbox.ferry("history", "--service", "shop-staging-api", "--env", "staging").stdout
        say(f"\n{BOLD}$ ferry history --service shop-staging-api --env staging{RESET}\n{history}")

        by_digest = {d["digest"]: d["state"] for d in sandbox.deployments() if not d.get("rolls_back")}
        checks = {
            "the good image was deployed and proven (SUCCEEDED)": by_digest.get(good) == "SUCCEEDED",
            "the bad image failed its smoke test and was rolled back (ROLLED_BACK)": by_digest.get(bad) == "ROLLED_BACK",
            "the good image is live again": live["api"].endswith(good),
            "on blue/green, Ferry's hook failed the bad green before production traffic (ROLLED_BACK, 0%)":
                by_digest.get(again) == "ROLLED_BACK" and peak == 0,
            "the sidecar never changed": live["proxy"] == fs.SIDECAR_IMAGE,
            "Slack heard about the failure and the rollback":
                any("rolled back" in m["body"].get("text", "") for m in sandbox.slack),
            "nothing was left in a dead-letter queue": not sandbox.dead_letters(),
        }
        for what, passed in checks.items():
            say(f"  {GREEN + '✔' if passed else RED + '✘'}{RESET} {what}")
            ok &= passed
    finally:
        sandbox.close()
        shutil.rmtree(work, ignore_errors=True)
    say(f"\n{GREEN + 'Demo complete.' if ok else RED + 'Demo FAILED.'}{RESET}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
