"""Assemble and run a server: the actors, the gRPC endpoint, the state folder."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from hamrah.aggregation import build_aggregator
from hamrah.algorithms.base import Algorithm
from hamrah.core.errors import ConfigError
from hamrah.core.params import num_parameters
from hamrah.core.records import accuracy_summary
from hamrah.data.federated import ArrayData
from hamrah.loop import RunPlan
from hamrah.models import ModelSpec
from hamrah.observe.dashboard import DashboardConfig
from hamrah.observe.tracking import TrackingConfig
from hamrah.server.config import ServerConfig
from hamrah.server.coordinator import Coordinator
from hamrah.server.guard import add_service
from hamrah.server.pipeline import ServerPipeline
from hamrah.server.secure_rounds import refuse_malicious_server_without_keys
from hamrah.server.selector import Selector
from hamrah.server.service import FederatedLearningService
from hamrah.server.state import ServerStore
from hamrah.server.watch import Watch
from hamrah.task import Task
from hamrah.transport.backoff import RETRY_MAX_S
from hamrah.transport.codec import CHUNK_BYTES
from hamrah.transport.plan import TaskRef
from hamrah.transport.security import TokenRegistry, server_credentials

log = logging.getLogger("hamrah.server")
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", CHUNK_BYTES + (1 << 16)),
    ("grpc.max_send_message_length", CHUNK_BYTES + (1 << 16)),
    ("grpc.so_reuseport", 0),
]


@dataclass(frozen=True)
class ServerSetup:
    """Everything a server run needs, resolved from a config (see ``hamrah.experiments.serve``)."""

    server: ServerConfig
    run: RunPlan
    algorithm: Algorithm
    algorithm_plan: dict
    model: ModelSpec | None  # a built-in model; None: the user task's model
    test_data: ArrayData | None
    goal: int
    config: dict
    ignore_index: int | None = None
    dashboard: DashboardConfig | None = None  # [dashboard]: live pages and /metrics on a second port
    tracking: TrackingConfig | None = None  # [tracking]: TensorBoard / MLflow sinks
    task: Task | None = None  # the task whose model, loss and metrics run (None: the built-in ``model``'s)
    task_ref: TaskRef | None = None  # how the FL plan names the task
    export: Callable | None = None  # (folder, model, params, metrics): write the final model (model.safetensors)
    plan_extra: dict = field(default_factory=dict)  # in every training plan (DP-SGD: each client's delta, target)


def refuse_unenforced_binding(s: ServerConfig, tokens: TokenRegistry | None) -> None:
    """Refuse a registry that binds tokens to certificates on a server that would not check them: the
    binding needs the caller's certificate, which only mutual TLS (``client_ca``) asks for.

    Raises:
        ConfigError: the registry holds certificate hashes and ``client_ca`` is unset; naming both.
    """
    if tokens is None or s.client_ca is not None:
        return
    bound = tokens.bound_devices()
    if bound:
        raise ConfigError(
            f"server.tokens_file {s.tokens_file!r} binds {len(bound)} devices' tokens to their certificates "
            f"(e.g. {bound[0]}), but server.client_ca is not set, so no device presents a certificate and "
            "the binding could not be enforced; expected server.client_ca = the CA of the devices' "
            "certificates (ca.pem of `hamrah provision`, with tls_cert and tls_key), or a tokens file "
            "without certificate hashes"
        )


class FLServer:
    """One population's server: ``await FLServer(setup, state_dir).serve(port)``."""

    def __init__(self, setup: ServerSetup, state_dir: str | Path):
        self.setup = setup
        if setup.config.get("secure_aggregation") is not None and setup.server.aggregator is not None:
            raise ConfigError(
                "[secure_aggregation] with server.aggregator: a robust aggregator needs each update, "
                "the server sees only their sum; expected one of the two"
            )
        if setup.server.aggregator is not None:
            build_aggregator(**setup.server.aggregator).check(setup.goal)
        s = setup.server
        self._new_state = None if Path(state_dir).exists() else Path(state_dir)  # made by this start, if any
        self.store = ServerStore(state_dir, setup.config, keep_last=s.keep_last, keep_best=s.keep_best)
        try:
            self._build(setup)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Undo a start that failed before serving: release the state folder's lock and remove the
        folder if this start created it (a wrong config or a busy port leaves nothing behind)."""
        self.store.close()
        if self._new_state is not None:
            shutil.rmtree(self._new_state, ignore_errors=True)

    def _build(self, setup: ServerSetup) -> None:
        s = setup.server
        self.base_totals = self.store.totals()  # counters of earlier processes on this state folder
        self.coordinator = Coordinator(
            s,
            setup.run,
            setup.algorithm,
            setup.algorithm_plan,
            setup.model,
            setup.test_data,
            self.store,
            setup.goal,
            setup.ignore_index,
            task=setup.task,
            task_ref=setup.task_ref,
        )
        self.coordinator.totals = self.totals
        self.coordinator.plan_extra = setup.plan_extra
        pipeline = ServerPipeline.from_config(
            setup.config, self.coordinator.params, setup.goal, self.store.dir, setup.algorithm.name, store=self.store
        )
        self.coordinator.pipeline = pipeline
        if pipeline is not None:
            pipeline.refuse_start(setup.run.rounds - self.coordinator.last_round)
        self.selectors = [Selector(i, self.coordinator, s.checkin_hold_s) for i in range(s.selectors)]
        tokens = TokenRegistry(s.tokens_file, s.revoked_file) if s.tokens_file else None
        if tokens is None:
            log.warning("server.tokens_file is not set: devices are NOT authenticated")
        refuse_unenforced_binding(s, tokens)
        refuse_malicious_server_without_keys(pipeline, tokens)
        if tokens is not None:
            self.coordinator.device_identity = lambda device: getattr(tokens.by_key(device), "signing_key", None)
        self.service = FederatedLearningService(self.coordinator, self.selectors, tokens)
        self.watch = Watch(
            setup.dashboard, setup.tracking, self.store.dir, setup.config, lambda: self.coordinator.finished
        )
        self.service.telemetry = self.watch.telemetry
        self.port: int | None = None

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Start listening; return the bound port.

        Raises:
            ConfigError: a port outside 0..65535, a taken port, bad TLS files, a dashboard that cannot
                start; a start that fails for any reason undoes itself first (:meth:`_abandon`).
        """
        s = self.setup.server
        serving = False
        try:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(f"--port {port}: expected a port number from 0 to 65535 (0 picks a free one)")
            self._grpc = grpc.aio.server(options=GRPC_OPTIONS)
            add_service(self.service, self._grpc)  # malformed messages reach the handlers as MALFORMED
            address = f"{host}:{port}"
            creds = server_credentials(s.tls_cert, s.tls_key, s.client_ca) if s.tls_cert else None
            try:
                if creds is not None:
                    bound = self._grpc.add_secure_port(address, creds)
                else:
                    bound = self._grpc.add_insecure_port(address)
            except RuntimeError:  # grpc's "Failed to bind": the port is taken or the address is not this host's
                bound = 0
            if bound == 0:
                raise ConfigError(
                    f"--port {port}: cannot listen on {address}: the port is in use or the address "
                    "is not one of this machine's; expected a free port (0 picks one)"
                )
            await self._grpc.start()
            serving = True
            self.watch.start(s)  # ConfigError: the dashboard's port is taken, its token file is wrong
        except BaseException as e:  # undo the start: no half-written state folder, nothing left listening or open
            if serving:
                await self._grpc.stop(grace=0)
            self.watch.error = f"{type(e).__name__}: {e}"
            try:  # the tracking sinks were opened with the server: closed as a failed run
                self.watch.stop()
            except Exception:  # best effort: the start's own error is the one to report
                log.debug("stopping the dashboard and tracking after a failed start", exc_info=True)
            self._abandon()
            raise
        self._new_state = None  # serving: the state folder is the server's now
        self.port = bound
        params = self.coordinator.params
        log.info(
            "serving population %r on %s:%d (%s, %s: %s parameters; %s; state %s)",
            s.population,
            host,
            bound,
            "TLS" if s.tls_cert else "plaintext",
            self.setup.model.name if self.setup.model is not None else f"task {self.coordinator.task_name}",
            f"{num_parameters(params):,}",
            f"cross-silo: {self.setup.goal} sites, each round" if s.cross_silo else f"goal {self.setup.goal} per round",
            self.store.dir,
        )
        return bound

    async def serve(self, port: int = 0, host: str = "127.0.0.1", linger_s: float | None = None) -> dict:
        """Serve until every round is committed, then ``linger_s`` more (default: the longest wait a device
        may be in, a reconnect delay or a retry of an unreachable server, plus the check-in hold), so every
        device that comes back hears that training is over and stops instead of retrying an ended server;
        return the summary."""
        s = self.setup.server
        if linger_s is None:
            linger_s = max(s.reconnect_max_s, RETRY_MAX_S) + s.checkin_hold_s
        if self.port is None:
            await self.start(port, host)
        self._on_sigterm()
        try:
            await self.coordinator.run()
            await asyncio.sleep(linger_s)  # tell devices that check in now that training is over
        except Exception as e:
            self.watch.failed(e)  # failed.json: the error and the last log lines, for the dashboard
            raise
        finally:
            await self._grpc.stop(grace=0.5)
            self.coordinator.master.close()
            summary = self.summary()
            self._export(summary)
            self.store.write_summary(summary)
            self.store.close()
            self.watch.stop()
        return summary

    def _export(self, summary: dict) -> None:
        """Write the final global model and its manifest into the state folder (as ``hamrah run`` does)."""
        if self.setup.export is None or not summary["rounds_committed"]:
            return
        records = self.store.committed_rounds()
        last = records[-1] if records else {}
        metrics = {"accuracy": summary.get("final_accuracy"), "loss": last.get("test_loss")}
        metrics.update({k[5:]: v for k, v in last.items() if k.startswith("test_") and k[5:] not in metrics})
        for k, v in summary.items():  # cross-silo: the sites' score of the final model
            if k.startswith("final_device_"):
                metrics["device_" + k[13:]] = v
        coord = self.coordinator
        self.setup.export(self.store.dir, coord.model, coord.params, metrics)
        log.info("final model written to %s", self.store.dir / "model.safetensors")

    def _on_sigterm(self) -> None:
        """Drain on SIGTERM (main thread only): finish the round in flight, commit it, then stop."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.drain)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals here
            pass

    def drain(self) -> None:
        """Start no new round; the server stops once the round in flight is committed or abandoned."""
        log.warning("SIGTERM: draining: the round in flight finishes, then the server stops")
        self.coordinator.drain()

    def totals(self) -> dict:
        """Return the run's counters: this process's plus those saved by earlier processes."""
        base, guard = self.base_totals, self.service.guard
        refusals = dict(base.get("refusals", {}))
        for reason, n in guard.refusals.items():
            refusals[reason] = refusals.get(reason, 0) + n
        now = {
            "refused_messages": self.service.refused,
            "refused_aggregates": self.coordinator.refused_aggregates,
            "devices_forwarded": sum(s.forwarded for s in self.selectors),
            "devices_turned_away": sum(s.turned_away for s in self.selectors),
        }
        out = {k: int(base.get(k, 0)) + v for k, v in now.items()}
        out["refusals"] = dict(sorted(refusals.items()))
        out["restarts"] = int(base.get("restarts", -1)) + 1 if base else 0
        return out

    def summary(self) -> dict:
        records = self.store.committed_rounds()
        return {
            "config": self.setup.config,
            "num_parameters": num_parameters(self.coordinator.params),
            "rounds_committed": len(records),
            **accuracy_summary(records, self.setup.run.target_accuracy),
            **(self.coordinator.final_eval or {}),  # cross-silo: the sites' score of the final model
            "wall_s": records[-1]["elapsed_s"] if records else 0.0,
            **self.totals(),
        }
