"""The ``switchcore`` command.

    switchcore check FILE        validate a config file; every problem as FILE: key.path: problem
    switchcore run [--config FILE] [--listen HOST:PORT] [--data DIR] [--log-level LEVEL]
    switchcore cdr export ...    call records for a time range as CSV or JSON lines
    switchcore report ...        KPIs by interval and dimension from the call records
    switchcore erlang ...        Erlang B, C and A planning
    switchcore simulate ...      a campaign's pacing on a fake clock against a simulated population

``run`` without ``--config`` uses the embedded defaults. ``--listen HOST:PORT`` (repeatable) replaces
``sip.listen`` with UDP and TCP on that address (IPv6 as ``[::1]:5060``); ``--data`` replaces
``node.data_dir``; ``--log-level`` replaces ``node.log_level``. A config with errors prints them and
exits 1 without starting anything.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import msgspec

from bindings.config import load_config
from core.config import LOG_LEVELS, Config, ConfigError, ListenAddress, parse_host_port

__all__ = ["main"]


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


# Commands whose module parses its own arguments: words → (module, function, help).
DELEGATED = {
    ("cdr", "export"): ("bindings.reports", "export_main", "export call records for a time range (CSV, JSON lines)"),
    ("report",): ("bindings.reports", "report_main", "KPIs by interval and dimension from the call records"),
    ("erlang",): ("bindings.reports", "erlang_main", "Erlang B, C and A planning"),
    ("simulate",): ("bindings.simulate", "main", "a campaign's pacing against a simulated population"),
}


def _delegated(argv: list[str]):
    """The (module, function) that serves ``argv``, and the arguments left for it; None if none does."""
    for words, (module, function, _) in DELEGATED.items():
        if tuple(argv[: len(words)]) == words:
            return getattr(importlib.import_module(module), function), argv[len(words):]
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchcore", description="Switchcore call-centre switching core.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for words, (_, _, text) in DELEGATED.items():
        if len(words) == 1:  # listed in --help; the module parses the rest
            commands.add_parser(words[0], help=text, add_help=False)
    cdr = commands.add_parser("cdr", help="call records: `switchcore cdr export --help`")
    cdr.add_argument("action", choices=sorted(w[1] for w in DELEGATED if w[0] == "cdr"))

    check = commands.add_parser("check", help="validate a config file without starting a node")
    check.add_argument("file", metavar="FILE", help="the TOML config file")

    run = commands.add_parser("run", help="run a node")
    run.add_argument("--config", metavar="FILE", help="TOML config file (default: the embedded defaults)")
    run.add_argument(
        "--listen",
        metavar="HOST:PORT",
        action="append",
        type=_listen_address,
        help="listen on UDP and TCP at this address instead of sip.listen (repeatable; IPv6 as [::1]:5060)",
    )
    run.add_argument("--data", metavar="DIR", help="data folder (node.data_dir)")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="node.log_level")
    return parser


def apply_overrides(config: Config, listen=None, data: str | None = None, log_level: str | None = None) -> Config:
    """``config`` with the command line's replacements applied."""
    node, sip = config.node, config.sip
    if data is not None:
        node = msgspec.structs.replace(node, data_dir=data)
    if log_level is not None:
        node = msgspec.structs.replace(node, log_level=log_level)
    if listen:
        addresses = tuple(ListenAddress(t, host, port) for host, port in listen for t in ("udp", "tcp"))
        sip = msgspec.structs.replace(sip, listen=tuple(dict.fromkeys(addresses)))
    return msgspec.structs.replace(config, node=node, sip=sip)


def _check(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line)
        return 1
    print(f"{path}: ok")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    config = apply_overrides(config, args.listen, args.data, args.log_level)
    from bindings import node  # only now: checking a file needs no event loop

    return node.run(config) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    delegated = _delegated(argv)
    if delegated is not None:
        function, rest = delegated
        return function(rest)
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.file)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
