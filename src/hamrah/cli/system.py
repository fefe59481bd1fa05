"""``hamrah`` commands of the real system: server, device, fleet, store, tokens, provision (the vertical
parties' command is in :mod:`hamrah.cli.parties`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hamrah.core.errors import HamrahError


def _logging(verbose: bool = False) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def _cmd_server(args: argparse.Namespace) -> None:
    import asyncio
    import dataclasses

    from hamrah.experiments.serve import load_dashboard_config, load_server_config, server_setup
    from hamrah.server.app import FLServer

    _logging(args.verbose)
    exp, srv = load_server_config(args.config)
    dashboard = load_dashboard_config(args.config)
    server = FLServer(dataclasses.replace(server_setup(exp, srv), dashboard=dashboard), args.state)
    from hamrah.experiments.progress import follow_rounds

    with follow_rounds(Path(args.state) / "metrics.jsonl", exp.run.rounds):  # a bar on a terminal only
        summary = asyncio.run(server.serve(args.port, args.host))
    acc = summary["final_accuracy"]
    print(
        f"done: {summary['rounds_committed']} rounds committed"
        + (f", final accuracy {acc:.4f}" if acc is not None else "")
        + (f", on-device accuracy {dev:.4f}" if (dev := summary.get("final_device_accuracy")) is not None else "")
        + f". State in {args.state}"
    )


def _device_config(args: argparse.Namespace, population: str):
    from hamrah.device.config import DeviceConfig
    from hamrah.transport.endpoints import is_address

    if not args.retry_for >= 0:
        raise HamrahError(f"--retry-for {args.retry_for:g}: expected seconds >= 0 (0: retry for ever)")
    if not args.max_backoff > 0:
        raise HamrahError(f"--max-backoff {args.max_backoff:g}: expected a positive number of seconds")
    if args.max_epsilon is not None and not 0 < args.max_epsilon < float("inf"):
        raise HamrahError(f"--max-epsilon {args.max_epsilon:g}: expected a positive number")
    if not is_address(args.server):
        raise HamrahError(f"--server {args.server}: expected HOST:PORT with a port in 1..65535")
    if args.max_tasks is not None and args.max_tasks < 1:
        raise HamrahError(
            f"--max-tasks {args.max_tasks}: expected an integer >= 1 (or leave it out: until the run ends)"
        )
    return DeviceConfig(
        server=args.server,
        token=getattr(args, "token", None),
        population=population,
        device_id=args.device_id,
        client_key=args.client_key,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_tasks=args.max_tasks,
        signing_key=getattr(args, "signing_key", None),
        unreachable_after_s=args.retry_for or None,
        max_retry_s=args.max_backoff,
        max_example_epsilon=args.max_epsilon,
    )


def _cmd_device(args: argparse.Namespace) -> None:
    import asyncio

    from hamrah.device.eligibility import HostState, ScriptedState
    from hamrah.device.runtime import DeviceRuntime
    from hamrah.device.store import ExampleStore

    _logging(args.verbose)
    if not Path(args.store).is_file():
        raise HamrahError(f"--store {args.store}: no such example store (make one with `hamrah store import`)")
    task = _installed_task(args)
    state = ScriptedState.always() if args.assume_eligible else HostState()
    cfg = _device_config(args, args.population)
    if args.credentials:
        from hamrah.transport.provision import DeviceCredentials

        cfg = DeviceCredentials.load(args.credentials).apply(cfg)
    with ExampleStore(args.store) as store:
        if task is not None:
            print(f"device {cfg.device_id}: task {task.task_name!r} installed (digest {task.digest()})", flush=True)
        stats = asyncio.run(DeviceRuntime(cfg, store, state, task=task).run())
    print(
        f"device done: {stats.tasks} tasks, {stats.reported} reported, {stats.aborted} aborted, "
        f"{stats.failed} failed, {stats.refused} refused"
    )


def _installed_task(args: argparse.Namespace):
    """Return the user task installed on this device: ``--task module:attribute [--task-kwargs JSON]``, or
    a device config's ``[task] entry`` (``--config device.toml``); None for neither (built-in models only)."""

    if args.task and args.config:
        raise HamrahError("--task and --config both name the device's task; expected one of the two")
    if args.task:
        from hamrah.task import load_task

        try:
            kwargs = json.loads(args.task_kwargs) if args.task_kwargs else {}
        except json.JSONDecodeError as e:
            raise HamrahError(
                f"--task-kwargs {args.task_kwargs!r}: not JSON ({e}); expected e.g. '{{\"hidden\": 16}}'"
            ) from None
        if not isinstance(kwargs, dict):
            raise HamrahError(f"--task-kwargs {args.task_kwargs!r}: expected a JSON object of keyword arguments")
        return load_task(args.task, kwargs, Path.cwd())
    if args.task_kwargs:
        raise HamrahError("--task-kwargs without --task: expected --task module:attribute with it")
    if args.config:
        from hamrah.experiments.serve import installed_task, load_server_config

        return installed_task(load_server_config(args.config)[0])
    return None


def _cmd_fleet(args: argparse.Namespace) -> None:
    import asyncio
    import tempfile

    from hamrah.device.fleet import Churn, make_tokens, run_fleet
    from hamrah.experiments.serve import import_stores, installed_task, load_server_config

    _logging(args.verbose)
    if not 1 <= args.devices <= 100_000:
        raise HamrahError(f"--devices {args.devices}: expected an integer in 1..100000")
    if args.first_client < 0:
        raise HamrahError(f"--first-client {args.first_client}: expected an integer >= 0")
    for name in ("offline", "unplug", "fail", "kill", "drop"):
        if not 0 <= getattr(args, name) <= 1:
            raise HamrahError(f"--{name} {getattr(args, name):g}: expected a probability in [0, 1]")
    exp, srv = load_server_config(args.config)
    base = _device_config(args, srv.population)  # every option checked before a store is written
    task = installed_task(exp)  # the config's user task, installed on every device of the fleet
    stores_dir = Path(args.stores) if args.stores else Path(tempfile.mkdtemp(prefix="hamrah-fleet-"))
    first = args.first_client
    from hamrah.transport.provision import device_folders, kits_beside

    kits = args.credentials or (kits_beside(srv.tokens_file) if srv.tokens_file and not args.tokens_file else None)
    if kits:
        tokens = device_folders(kits, first + args.devices)[first:]
    else:
        tokens_path = (
            Path(args.tokens_file) if args.tokens_file else (Path(srv.tokens_file) if srv.tokens_file else None)
        )
        tokens = make_tokens(tokens_path, first + args.devices)[first:] if tokens_path else [None] * args.devices
    churn = Churn(args.offline, args.unplug, args.fail, args.kill, args.drop, args.drop_stage, seed=exp.run.seed)
    stores = import_stores(exp, stores_dir, list(range(first, first + args.devices)))
    print(f"fleet: {args.devices} devices (stores in {stores_dir}) -> {args.server}")
    from hamrah.experiments.progress import fleet_progress

    with fleet_progress() as on_round:
        keys = list(range(first, first + args.devices))
        stats = asyncio.run(run_fleet(base, stores, tokens, churn, keys, task, on_round))
    alive = [s for s in stats if s is not None]
    stopped = [
        (i, s.messages[-1])
        for i, s in enumerate(stats)
        if s is not None and s.messages and s.messages[-1].startswith("stopped: ")
    ]
    for i, line in stopped:
        print(f"device {first + i} {line}")
    reported, failed = sum(s.reported for s in alive), sum(s.failed for s in alive)
    print(
        f"fleet done: {len(alive)} devices alive, {reported} updates reported, "
        f"{sum(s.aborted for s in alive)} aborted, {failed} failed"
        + (f", {len(stopped)} refused by the server" if stopped else "")
    )
    if not reported and (failed or stopped):
        raise HamrahError(
            f"fleet: no device's update was taken ({failed} tasks failed, {len(stopped)} devices refused by "
            "the server); expected the devices' data, credentials and task to match the server's (lines above)"
        )


def _cmd_store(args: argparse.Namespace) -> None:
    from hamrah.device.store import ExampleStore, check_ttl

    if args.action == "import":
        from hamrah.core.files import check_writable_file

        check_ttl(args.ttl, "--ttl")  # the options and paths first: nothing is read or written on a mistake
        check_writable_file(args.out, "--store")
        if args.source and not args.config:
            from hamrah.device.store_import import import_command

            print(import_command(args, sys.stderr))
            return
        if not args.config:
            raise HamrahError("store import: --from FILE_OR_DIR or --config (a partition's client) is required")
        if Path(args.out).exists():
            raise HamrahError(
                f"--store {args.out}: already exists; expected a new store path (--config fills a new one)"
            )
        from hamrah.experiments.runner import prepare
        from hamrah.experiments.serve import import_client, import_local, installed_task, load_server_config

        if args.source:  # this site's own files, read by the config's task (its local_data)
            task = installed_task(load_server_config(args.config)[0])
            if task is None:
                raise HamrahError(
                    "store import --config with --from: the config names no [task] entry; a built-in data "
                    "set's device imports its partition's client (--client K) or its own files (--from alone)"
                )
            n = import_local(task, args.source, args.out, args.ttl)
            print(f"{args.out}: {n} examples from {args.source} (task {task.task_name})")
            return

        prep = prepare(load_server_config(args.config)[0])  # a run's config, a server's or a device's
        if not 0 <= args.client < prep.data.num_clients:
            raise HamrahError(f"--client {args.client}: the partition has clients 0..{prep.data.num_clients - 1}")
        n = import_client(prep, args.client, args.out, args.ttl)
        print(f"{args.out}: {n} examples of client {args.client}")
        return
    if not Path(args.out).is_file():  # opening a missing store would create an empty one
        what = "is a folder" if Path(args.out).is_dir() else "no such example store"
        raise HamrahError(f"--store {args.out}: {what}; expected a store made by `hamrah store import`")
    with ExampleStore(args.out) as store:
        print(f"{args.out}: {store.count()} live examples" + (f" ({store.schema.describe()})" if store.schema else ""))


def _cmd_tokens(args: argparse.Namespace) -> None:
    from hamrah.device.fleet import MAX_TOKENS, make_tokens

    if not 1 <= args.count <= MAX_TOKENS:
        raise HamrahError(f"--count {args.count}: expected an integer from 1 to {MAX_TOKENS:,}")
    existed = Path(args.file).exists()
    server_file = Path(args.server_file) if args.server_file else None
    tokens = make_tokens(Path(args.file), args.count, server_file)
    print(
        f"{args.file}: {len(tokens)} device tokens"
        + (" (kept the existing file)" if existed else " (new)")
        + (f"; their sha256 digests for the server in {server_file}" if server_file else "")
    )


def _cmd_provision(args: argparse.Namespace) -> None:
    from hamrah.transport.provision import provision

    files = provision(args.out, args.devices, tuple(args.hosts.split(",")), args.prefix)
    print(
        f"{args.out}: a CA ({files['ca']}), the server's kit ({files['server']}: server.pem, server.key, "
        f"{files['registry'].name}) and {args.devices} device kits in {files['devices']}.\n"
        f"Server config: tls_cert, tls_key, client_ca = the server kit's server.pem, server.key, ca.pem; "
        f"tokens_file = {files['registry']}.\nDevices: hamrah fleet ... --credentials {files['devices']} "
        f"(or hamrah device ... --credentials {files['devices']}/<name>)."
    )


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--name", "--device-id", dest="device_id", default="device", help="the device's name in logs")
    p.add_argument("--client-key", type=int, default=0, help="seeds local shuffles (a simulated client's id)")
    p.add_argument("--tls-ca", help="CA certificate to trust (enables TLS)")
    p.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", help="client key (mutual TLS)")
    p.add_argument("--max-tasks", type=int, help="stop after this many tasks")
    p.add_argument(
        "--max-epsilon",
        type=float,
        help='DP-SGD runs (privacy.mode = "dpsgd"): the most example-level epsilon this device spends over all runs',
    )
    p.add_argument(
        "--retry-for",
        type=float,
        default=600.0,
        help="seconds to keep retrying an unreachable server, with jittered backoff (0: for ever)",
    )
    p.add_argument("--max-backoff", type=float, default=5.0, help="longest pause between retries, seconds")
    p.add_argument("-v", "--verbose", action="store_true")


def add_commands(sub) -> None:
    """Register this module's commands on the ``hamrah`` parser's subparsers."""
    p = sub.add_parser("server", help="run the FL server (coordinator, selectors, aggregators) over gRPC")
    p.add_argument("--config", required=True, help="TOML: [data], [model], [algorithm], [run], [server]")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--state", required=True, help="state folder: checkpoints, round records; resumes from it")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_cmd_server)
    p = sub.add_parser("device", help="run one device's FL runtime against a server")
    _add_device_args(p)
    p.add_argument("--store", required=True, help="the device's example store (SQLite)")
    p.add_argument("--token", help="the device's authentication token")
    p.add_argument("--signing-key", help="the device's Ed25519 signing key (signs every call)")
    p.add_argument("--credentials", help="a device kit from `hamrah provision` (token, signing key, TLS files)")
    p.add_argument("--population", default="default")
    p.add_argument("--assume-eligible", action="store_true", help="skip the idle/charging/unmetered checks")
    p.add_argument("--task", help="the user task installed on this device: module:attribute (imported from here)")
    p.add_argument("--task-kwargs", help="--task's keyword arguments as a JSON object, e.g. '{\"hidden\": 16}'")
    p.add_argument("--config", help="a device config (device.toml): its [task] is the task installed on this device")
    p.set_defaults(func=_cmd_device)
    p = sub.add_parser("fleet", help="run N real device runtimes over a config's partition")
    _add_device_args(p)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--stores", help="folder for the devices' example stores (default: a temporary folder)")
    p.add_argument("--first-client", type=int, default=0, help="partition client of the first device")
    p.add_argument("--tokens-file", help="device tokens, one per line (default: the config's server.tokens_file)")
    p.add_argument("--credentials", help="the devices folder of `hamrah provision` (one kit per device)")
    for name in ("offline", "unplug", "fail", "kill"):
        p.add_argument(f"--{name}", type=float, default=0.0, help=f"per-task probability a device goes {name}")
    p.add_argument(
        "--drop",
        type=float,
        default=0.0,
        help="under secure aggregation: per-task probability a device vanishes mid-protocol",
    )
    p.add_argument(
        "--drop-stage",
        default="masked_input",
        choices=["advertise_keys", "share_keys", "masked_input", "unmasking"],
        help="the protocol stage whose message a dropping device never sends",
    )
    p.set_defaults(func=_cmd_fleet)
    p = sub.add_parser("store", help="fill or inspect a device's example store")
    p.add_argument("action", choices=["import", "count"])
    p.add_argument("--config", help="import: the config whose partition to take a client from")
    p.add_argument("--client", type=int, default=0, help="import: the partition's client id")
    p.add_argument("--store", "--out", dest="out", required=True, help="the store's path")
    p.add_argument("--from", dest="source", help="import: a data file or folder (CSV, Parquet, .npz, images, hf)")
    p.add_argument("--format", choices=["csv", "parquet", "npz", "images", "hf"], help="default: told by the path")
    p.add_argument("--label", help="import --from: the label column / array")
    p.add_argument("--features", help="import --from: comma-separated feature columns (default: all others)")
    p.add_argument("--columns", help="import --from: comma-separated column names of a CSV without a header")
    p.add_argument("--client-column", help="import --from: a column (npz: an array) of client ids")
    p.add_argument("--group", help="import --from: import only this natural client (a file stem or client id)")
    p.add_argument("--split", help="import --from: the split folder / keys to read (train, test)")
    p.add_argument("--missing", choices=["error", "drop"], default="error", help="rows with a missing value")
    p.add_argument("--image-size", help="import --from images: resize every image to HEIGHTxWIDTH, e.g. 16x16")
    p.add_argument("--image-mode", choices=["RGB", "L"], default="RGB", help="import --from images: colour or grey")
    p.add_argument("--ttl", type=float, help="import --from: seconds until the imported examples expire")
    p.add_argument("--schema", help="import --from: read the data under this schema JSON (shared codes)")
    p.add_argument("--save-schema", help="import --from: write the imported data's schema JSON here")
    p.set_defaults(func=_cmd_store)
    p = sub.add_parser("tokens", help="create a file of device tokens (one per line) if it does not exist")
    p.add_argument("file", help="the devices' tokens (written 0600)")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--server-file", help="also write the tokens' sha256 digests here: the server's tokens_file")
    p.set_defaults(func=_cmd_tokens)
    p = sub.add_parser("provision", help="make a CA, the server's credentials and per-device kits (one folder each)")
    p.add_argument("out", help="the provisioning folder (rerun with more --devices to add devices)")
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--hosts", default="localhost,127.0.0.1", help="comma-separated names/addresses of the server")
    p.add_argument("--prefix", default="device", help="device names: PREFIX-0000, PREFIX-0001...")
    p.set_defaults(func=_cmd_provision)
