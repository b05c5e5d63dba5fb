"""Agent swarm CLI.

python -m loadtest.swarm [run] --scenario agents-100 --config loadtest/configs/four-engines.toml
    [--policy P] [--seed S] [--time-scale X] [--engines process|inline] [--json out.json] [--plot out.png]
python -m loadtest.swarm compare --scenario agents-100 --config ... [--policies round-robin,least-active]
python -m loadtest.swarm validate --config ... [--scenario agents-100] [--overload overload]
python -m loadtest.swarm list
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.config import ConfigError, load_config
from gateway.logs import configure_logging
from loadtest.swarm import compare as cmp
from loadtest.swarm.plot import plot
from loadtest.swarm.report import table
from loadtest.swarm.runner import DEFAULT_KEY, run_scenario
from loadtest.swarm.scenarios import SCENARIOS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.swarm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", nargs="?", default="run", choices=["run", "compare", "validate", "list"])
    p.add_argument("--scenario", default="agents-100", choices=sorted(SCENARIOS))
    p.add_argument("--config", default="loadtest/configs/four-engines.toml")
    p.add_argument("--policy", help="run: route every model with this policy (default: as configured)")
    p.add_argument("--policies", help="compare: comma-separated policies (default: every registered one)")
    p.add_argument("--overload", default="overload", choices=sorted(SCENARIOS), help="validate: the overload scenario")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-scale", type=float, help="simulated seconds per wall second (default: the config's)")
    p.add_argument("--model", help="model alias the agents call (default: the config's first)")
    p.add_argument("--api-key", default=DEFAULT_KEY, help="gateway key (the sample configs hold sk-swarm-local's hash)")
    p.add_argument(
        "--engines",
        choices=["process", "inline"],
        default="process",
        help="simulated engines in a child process (default: faithful timing) or in the swarm's own loop",
    )
    p.add_argument("--json", help="write the report(s) as JSON here")
    p.add_argument("--plot", help="run: write a PNG (needs matplotlib: pip install -e '.[plots]')")
    return p


def _dump(path: str, data: Any) -> None:
    Path(path).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


async def _main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    run = functools.partial(
        run_scenario,
        config,
        SCENARIOS[args.scenario],
        seed=args.seed,
        api_key=args.api_key,
        model=args.model,
        time_scale=args.time_scale,
        engines_process=args.engines == "process",
    )
    if args.command == "run":
        report = await run(policy=args.policy)
        print(table(report))
        if args.json:
            _dump(args.json, report)
        if args.plot and not plot(report, args.plot):
            print("--plot: matplotlib is not installed (pip install -e '.[plots]'); no PNG written", file=sys.stderr)
        return 0 if report["requests"]["accounted"] else 1
    if args.command == "compare":
        reports = await cmp.compare(run, cmp.policy_names(args.policies))
        print(cmp.compare_table(reports))
        if args.json:
            _dump(args.json, [{k: v for k, v in r.items() if k != "series"} for r in reports])
        return 0
    rr = await run(policy="round-robin")
    pinned = await run(policy_factory=cmp.SessionPin, policy_label="session-pin")
    over = await run_scenario(
        config,
        SCENARIOS[args.overload],
        policy="round-robin",
        seed=args.seed,
        api_key=args.api_key,
        model=args.model,
        time_scale=args.time_scale,
        engines_process=args.engines == "process",
    )
    results = cmp.check(pinned, rr, rr, over)
    print(cmp.compare_table([rr, pinned, over]))
    print()
    print(cmp.check_table(results))
    if args.json:
        _dump(
            args.json,
            {"claims": results, "runs": [{k: v for k, v in r.items() if k != "series"} for r in (rr, pinned, over)]},
        )
    return 0 if cmp.passed(results) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:12} {s.agents:5} agents  {s.description}")
        return 0
    configure_logging("warning", "console")
    try:
        try:
            import uvloop  # optional: a faster event loop (less CPU per streamed chunk)
        except ImportError:
            return asyncio.run(_main(args))
        return uvloop.run(_main(args))
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
