"""``hamrah party``: one party of a vertical-FL protocol, as its own process over gRPC + TLS (train, or
score rows with ``--predict``), and ``--make-tls`` for the parties' certificates."""

from __future__ import annotations

import argparse
import functools


def _cmd_party(args: argparse.Namespace) -> None:
    import os

    from hamrah.core.errors import ConfigError

    # gRPC's own log lines (each failed TLS attempt, a port in use) repeat what the party reports in one line
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    if args.make_tls:
        from hamrah.parties.tls import make_party_tls

        names = [n for n in (args.names or "").split(",") if n]
        make_party_tls(args.make_tls, names, tuple(args.hosts.split(",")))
        print(f"{args.make_tls}: ca.pem and <name>-server/-client .pem/.key for {', '.join(names)}")
        return
    if not args.config:
        raise ConfigError("hamrah party: expected --config PARTY.toml (or --make-tls DIR --names a,b)")
    if args.model and args.predict is None:
        raise ConfigError("hamrah party: --model goes with --predict (the rows to score)")
    from hamrah.parties.config import load_party_config
    from hamrah.parties.runner import predict_party, run_party

    cfg = load_party_config(args.config)
    report = functools.partial(print, flush=True)
    if args.predict is None:
        run_party(cfg, report=report)
        model = ", model.npz" if (cfg.out / "model.npz").exists() else ""
        print(f"{cfg.name}: done; wrote {cfg.out}/summary.json{model}")
        return
    summary = predict_party(cfg, args.predict or None, args.model, report=report)
    scores = ", ".join(f"{k} {summary[k]:.4f}" for k in ("auc", "accuracy", "rmse") if k in summary)
    wrote = f"; wrote {summary['predictions']}" if "predictions" in summary else ""
    print(
        f"{cfg.name}: scored {summary['scored']} of {summary['rows']} rows" + (f" ({scores})" if scores else "") + wrote
    )


def add_commands(sub) -> None:
    """Register ``hamrah party`` on the ``hamrah`` parser's subparsers."""
    p = sub.add_parser("party", help="run one party of a vertical-FL protocol over gRPC + TLS (train, or --predict)")
    p.add_argument("--config", help="the party's TOML: [party], [data], [peers], [tls], [protocol]")
    p.add_argument("--make-tls", metavar="DIR", help="write a CA and per-party certificates into DIR instead")
    p.add_argument("--names", help="party names for --make-tls, comma-separated")
    p.add_argument("--hosts", default="localhost,127.0.0.1", help="server certificate hosts for --make-tls")
    p.add_argument(
        "--predict",
        metavar="ROWS.csv",
        nargs="?",
        const="",
        help="score these rows (this party's columns, the same id column) with the trained model instead of "
        "training; FTL's guest gives no file",
    )
    p.add_argument("--model", metavar="model.npz", help="with --predict: the model to use (default: OUT/model.npz)")
    p.set_defaults(func=_cmd_party)
