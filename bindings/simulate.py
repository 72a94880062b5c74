"""``switchcore simulate``: a campaign's real pacing code on a fake clock against a simulated population.

    switchcore simulate [--agents N] [--answer-probability P] [--ring-mean S] [--ring-shape K]
                        [--ring-cap S] [--handle-mean S] [--handle-sd S] [--busy-probability P]
                        [--busy-after S] [--population FILE] [--hours H] [--seed S] [--seeds N]
                        [--modes predictive,progressive,ratio,clairvoyant] [--dial-ratio R] [--target RATE]
                        [--price THETA] [--rules us|uk] [--window S] [--connect-limit S] [--tick S] [--json]

Prints, per mode and seed, calls attempted, live answers, connects, abandons, the abandon rate,
occupancy and connects per agent-hour, and the wall time the run took. The ``clairvoyant`` mode is not a
pacer but the bound no pacer can pass (``core.scheduler.simulate.clairvoyant_baseline``: a dialler that
knows every outcome in advance, on the same people); ``--price`` fixes the predictive pacer's price
instead of learning it, to trace what occupancy each abandon rate buys. The population comes from the
flags, or from a TOML or JSON file (``--population``) with the same names (underscores), where ``ring``
and ``handle`` are tables: ``{kind = "gamma", mean = 8, shape = 2}``, ``{kind = "lognormal", mean = 150,
sd = 100}``, ``{kind = "empirical", samples = [...]}``, ``exponential`` or ``fixed`` with a ``mean``;
a flag given on the command line wins over the file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.scheduler.pacing import MODES, RULES, PacingConfig
from core.scheduler.simulate import Distribution, Population, SimulationResult, clairvoyant_baseline, simulate

#: Not a pacing mode: the bound of a dialler that knows the future, run beside the pacers.
CLAIRVOYANT = "clairvoyant"

__all__ = ["main", "parser", "load_population"]


def parser(prog: str = "switchcore simulate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run campaign pacing against a simulated population.")
    pop = p.add_argument_group("population (defaults: the issue's test population)")
    pop.add_argument("--population", metavar="FILE", help="TOML or JSON file describing the population")
    pop.add_argument("--agents", type=int, metavar="N", help="agents logged in (20)")
    pop.add_argument("--answer-probability", type=float, metavar="P", help="share of calls a person answers (0.30)")
    pop.add_argument("--ring-mean", type=float, metavar="S", help="mean ring time to answer, gamma (8)")
    pop.add_argument("--ring-shape", type=float, metavar="K", help="shape of the ring-time gamma (2)")
    pop.add_argument("--ring-cap", type=float, metavar="S", help="no-answer timer (20)")
    pop.add_argument("--handle-mean", type=float, metavar="S", help="mean handle time, log-normal (150)")
    pop.add_argument("--handle-sd", type=float, metavar="S", help="s.d. of the handle time (100)")
    pop.add_argument("--busy-probability", type=float, metavar="P", help="share of calls that meet busy (0)")
    pop.add_argument("--busy-after", type=float, metavar="S", help="when a busy line fails (3)")
    run = p.add_argument_group("run")
    run.add_argument("--hours", type=float, default=24.0, help="simulated hours (24)")
    run.add_argument("--seed", type=int, default=0, help="first seed (0)")
    run.add_argument("--seeds", type=int, default=1, help="number of seeds (1)")
    run.add_argument("--modes", default=",".join((MODES[1], MODES[0], MODES[2])), type=_modes,
                     help="comma-separated dialling modes to compare (predictive,progressive,ratio; "
                          "clairvoyant: the bound of a dialler that knows every outcome)")
    run.add_argument("--tick", type=float, default=1.0, help="seconds between pacing decisions with no event (1)")
    pacing = p.add_argument_group("pacing")
    pacing.add_argument("--target", type=float, default=0.03, help="abandon-rate cap (0.03)")
    pacing.add_argument("--rules", choices=sorted(RULES), default="us",
                        help="rolling window by rules: us = 30 days, uk = 24 hours (us)")
    pacing.add_argument("--window", type=float, metavar="S", help="rolling window in seconds (overrides --rules)")
    pacing.add_argument("--connect-limit", type=float, default=2.0, help="seconds an answer may wait for an agent (2)")
    pacing.add_argument("--dial-ratio", type=float, default=2.0, help="lines per free agent in ratio mode (2)")
    pacing.add_argument("--price", type=float, metavar="THETA",
                        help="fix the predictive price (abandons per live answer) instead of learning it; "
                             "with a high --target the fallback to progressive stays out of the way")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    return p


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES and mode != CLAIRVOYANT:
            raise argparse.ArgumentTypeError(f"{mode!r} is not a mode ({', '.join(MODES + (CLAIRVOYANT,))})")
    if not modes:
        raise argparse.ArgumentTypeError("no mode given")
    return modes


def _distribution(value, where: str) -> Distribution:
    if not isinstance(value, dict) or "kind" not in value:
        raise ValueError(f"{where}: a table with a kind ({{kind = \"gamma\", mean = 8, shape = 2}})")
    fields = {"kind", "mean", "sd", "shape", "samples"}
    unknown = set(value) - fields
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    value = dict(value)
    if "samples" in value:
        value["samples"] = tuple(float(x) for x in value["samples"])
    try:
        return Distribution(**value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_population(path: str) -> Population:
    """A population from a TOML or JSON file; ValueError names the file and the problem."""
    data = Path(path).read_bytes()
    try:
        table = json.loads(data) if path.endswith(".json") else tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    known = set(Population.__dataclass_fields__)
    for key in table:
        if key not in known:
            raise ValueError(f"{path}: {key}: unknown key (known: {', '.join(sorted(known))})")
    for key in ("ring", "handle"):
        if key in table:
            table[key] = _distribution(table[key], f"{path}: {key}")
    try:
        return Population(**table)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _population(args: argparse.Namespace) -> Population:
    pop = load_population(args.population) if args.population else Population()
    flat = {
        "agents": args.agents, "answer_probability": args.answer_probability, "ring_cap": args.ring_cap,
        "busy_probability": args.busy_probability, "busy_after": args.busy_after,
    }
    pop = replace(pop, **{k: v for k, v in flat.items() if v is not None})
    if args.ring_mean is not None or args.ring_shape is not None:
        shape = args.ring_shape if args.ring_shape is not None else (pop.ring.shape if pop.ring.kind == "gamma" else 2.0)
        mean = args.ring_mean if args.ring_mean is not None else pop.ring.mean
        pop = replace(pop, ring=Distribution.gamma(mean, shape))
    if args.handle_mean is not None or args.handle_sd is not None:
        mean = args.handle_mean if args.handle_mean is not None else pop.handle.mean
        sd = args.handle_sd if args.handle_sd is not None else (pop.handle.sd or mean * 2 / 3)
        pop = replace(pop, handle=Distribution.lognormal(mean, sd))
    return pop


def _row(result: SimulationResult, seed: int, wall: float) -> dict:
    return {
        "mode": result.mode, "seed": seed, "agents": result.agents, "hours": result.duration / 3600.0,
        "attempted": result.attempted, "answered": result.answered, "connected": result.connected,
        "abandoned": result.abandoned, "abandon_rate": result.abandon_rate, "occupancy": result.occupancy,
        "connects_per_agent_hour": result.connects_per_agent_hour, "wall_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        pop = _population(args)
        configs = {
            mode: PacingConfig(
                mode=mode, abandon_target=args.target, window=args.window or RULES[args.rules],
                connect_limit=args.connect_limit, max_ring=pop.ring_cap, dial_ratio=args.dial_ratio,
                price=args.price,
            )
            for mode in args.modes
            if mode != CLAIRVOYANT
        }
    except (OSError, ValueError) as exc:
        print(f"switchcore simulate: {exc}", file=sys.stderr)
        return 1
    if args.hours <= 0 or args.seeds < 1 or args.tick <= 0:
        print("switchcore simulate: --hours and --tick must be positive, --seeds at least 1", file=sys.stderr)
        return 1
    duration = args.hours * 3600.0
    if not args.json:
        print(f"population: {_describe(pop)}")
        window = args.window or RULES[args.rules]
        print(f"pacing: abandon target {args.target:.1%} over {window / 3600:g} h, "
              f"{args.connect_limit:g} s to connect; {args.hours:g} simulated hours"
              + (f"; predictive price fixed at {args.price:g}" if args.price else ""))
        print(f"{'mode':<12}{'seed':>5}{'attempted':>11}{'answered':>10}{'connected':>11}{'abandoned':>11}"
              f"{'abandon':>9}{'occupancy':>11}{'conn/agent-h':>14}{'wall s':>8}")
    for seed in range(args.seed, args.seed + args.seeds):
        for mode in args.modes:
            started = time.perf_counter()
            if mode == CLAIRVOYANT:
                result = clairvoyant_baseline(pop, duration, np.random.default_rng(seed), args.connect_limit)
            else:
                result = simulate(pop, configs[mode], duration, np.random.default_rng(seed), tick=args.tick)
            row = _row(result, seed, time.perf_counter() - started)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{mode:<12}{seed:>5}{row['attempted']:>11}{row['answered']:>10}{row['connected']:>11}"
                      f"{row['abandoned']:>11}{row['abandon_rate']:>9.2%}{row['occupancy']:>11.1%}"
                      f"{row['connects_per_agent_hour']:>14.1f}{row['wall_seconds']:>8.1f}")
            sys.stdout.flush()
    return 0


def _describe(pop: Population) -> str:
    def dist(d: Distribution) -> str:
        if d.kind == "gamma":
            return f"gamma mean {d.mean:g} s shape {d.shape:g}"
        if d.kind == "lognormal":
            return f"log-normal mean {d.mean:g} s sd {d.sd:g} s"
        if d.kind == "empirical":
            return f"empirical ({len(d.samples)} samples)"
        return f"{d.kind} mean {d.mean:g} s"

    text = (f"{pop.agents} agents, answer probability {pop.answer_probability:g}, ring {dist(pop.ring)} "
            f"(no answer after {pop.ring_cap:g} s), handle {dist(pop.handle)}")
    if pop.busy_probability:
        text += f", busy {pop.busy_probability:g} after {pop.busy_after:g} s"
    return text


if __name__ == "__main__":
    sys.exit(main())
