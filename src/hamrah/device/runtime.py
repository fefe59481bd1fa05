"""The FL runtime on a device (Bonawitz et al. 2019, section 3).

Loop: wait until eligible (idle, charging, unmetered); check in; on a task, download the
checkpoint, run the plan on the Example Store's data with the same client code the simulator uses
(:func:`hamrah.algorithms.client_update`), watching eligibility all along (a condition that stops
holding aborts the task and tells the server), report the update; then come back when the server
said to.

A cross-silo site (the server's check-in reply says ``mode = "cross_silo"``) skips the eligibility
checks: its first check-in goes out whatever its state, and from the first reply on it trains
whenever it is asked. Before training it checks its store against the plan (examples present, input
shape, labels); a mismatch fails the task with the reason, and the server then takes the site out of
the run and tells it so at its next check-in. Everything a device does is logged at INFO under
``DeviceConfig.device_id`` (``hamrah device --name``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

import hamrah
from hamrah.core.errors import AuthError, BudgetExhausted, HamrahError, TransportError
from hamrah.core.params import Params
from hamrah.device.compute import TASK_METRICS, TaskJob
from hamrah.device.config import DeviceConfig, DeviceStats
from hamrah.device.downlink import download, pace
from hamrah.device.eligibility import StateSource
from hamrah.device.pipeline import plan_pipeline
from hamrah.device.secure import SecAggIdentity, SecureSession, secure_stage
from hamrah.device.site import check_task
from hamrah.device.store import ExampleStore
from hamrah.transport.backoff import jittered
from hamrah.transport.codec import (
    BROADCAST_PREFIX,
    CHUNK_BYTES,
    chunks,
    encode_params,
    encode_task_metrics,
)
from hamrah.transport.endpoints import tls_failure
from hamrah.transport.identity import DeviceKey, RequestSigner
from hamrah.transport.plan import OUT_OF_RUN, Plan
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc
from hamrah.transport.security import channel_credentials

if TYPE_CHECKING:
    from hamrah.task import Task

log = logging.getLogger("hamrah.device")
CROSS_SILO = "cross_silo"  # CheckInResponse.mode of a cross-silo server
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", CHUNK_BYTES + (1 << 16)),
    ("grpc.max_send_message_length", CHUNK_BYTES + (1 << 16)),
]


_LOGGED = ("train_loss", "loss", "accuracy", "eval_loss", "eval_accuracy")  # metrics in the device's log line


class TaskAborted(Exception):
    """An eligibility condition stopped holding mid-task."""


class DeviceRuntime:
    """One device: its store, its state source, its channel to the server.

    ``fault`` (simulated fleets) is asked at the start of each task and may return "offline"
    (vanish mid-task without a word), "fail" (an error mid-task, reported) or None.

    ``task`` is the user task installed on this device (``hamrah device --task`` / ``--config``): a
    plan naming a user task runs only if its name and digest are this task's (else the task fails with
    one line naming both); the device then trains on the store's live records under the task's schema,
    with the task's model, loss and metrics. A built-in model's plan needs no task installed.
    """

    def __init__(
        self,
        cfg: DeviceConfig,
        store: ExampleStore,
        state: StateSource,
        fault: Callable[[int], str | None] | None = None,
        task: Task | None = None,
    ):
        self.cfg, self.store, self.state, self.fault, self.task = cfg, store, state, fault, task
        self.stats = DeviceStats()
        self.pipeline_states: dict = {}  # the update pipeline's per-stage client state (error feedback)
        self._pending_pipeline: dict = {}  # the running task's, until the server accepts its report
        key = DeviceKey.load(cfg.signing_key) if cfg.signing_key else None
        self._signer = RequestSigner(cfg.token, key, cfg.device_id)
        self._jitter = random.Random(hashlib.sha256(f"{cfg.device_id}/{cfg.client_key}".encode()).digest())
        self.site = False  # a cross-silo site (learned from the server's reply): no eligibility checks
        self.session = secrets.token_hex(8)  # this process's: a site taken out rejoins from a new one

    def _channel(self) -> grpc.aio.Channel:
        c = self.cfg
        if c.tls_ca:
            creds = channel_credentials(c.tls_ca, c.tls_cert, c.tls_key)
            return grpc.aio.secure_channel(c.server, creds, options=CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(c.server, options=CHANNEL_OPTIONS)

    async def run(self) -> DeviceStats:
        """Check in and run tasks until the server ends training or ``max_tasks`` are done.

        Raises:
            AuthError: the server refused the device's token.
            TransportError: the server stayed unreachable for ``unreachable_after_s``.
            ConfigError: the signing key cannot be read (raised by the constructor).
        """
        async with self._channel() as channel:
            stub = pb_grpc.FederatedLearningStub(channel)
            while self.cfg.max_tasks is None or self.stats.tasks < self.cfg.max_tasks:
                state = self.state.read()
                if not state.eligible and not self.site and self.stats.check_ins:  # the first goes out: a site?
                    await asyncio.sleep(self.cfg.poll_s * 10)
                    continue
                reply = await self._call(stub.CheckIn, self._check_in_request(state))
                self.stats.check_ins += 1
                if reply.mode == CROSS_SILO and not self.site:
                    self.site = True
                    log.info("device %s: a cross-silo site of %s: trains whenever asked", self.name, self.cfg.server)
                if reply.finished:
                    self._finished(reply.message)
                    break
                if reply.HasField("task"):
                    wait = await self._run_task(stub, reply.task)
                else:
                    wait = reply.reconnect_after_s
                if not math.isfinite(wait):
                    log.warning("device %s: the server said to come back after %s s; expected seconds", self.name, wait)
                await asyncio.sleep(pace(wait, self.cfg.max_retry_s))
        return self.stats

    @property
    def name(self) -> str:
        return self.cfg.device_id

    def _finished(self, message: str) -> None:
        """Log why the server ended this device's run (training is over, or this site is out of it)."""
        self.stats.out_of_run = message.startswith(OUT_OF_RUN)
        self.stats.finished = not self.stats.out_of_run  # the others train on
        if self.stats.out_of_run:
            log.error("device %s: the server says %s", self.name, message)
            self.stats.messages.append(message)
        else:
            log.info("device %s: the server says %s; stopping", self.name, message or "training is over")

    def _check_in_request(self, state) -> pb.CheckInRequest:
        ds = pb.DeviceState(idle=state.idle, charging=state.charging, unmetered=state.unmetered, battery=state.battery)
        return pb.CheckInRequest(
            population=self.cfg.population,
            runtime_version=hamrah.__version__,
            device_id=self.cfg.device_id,
            state=ds,
            # whether the store holds examples, not how many: the count is a fact about the device's data that no
            # epsilon covers, and before its plan a device cannot know whether the run protects its examples
            num_examples=min(self.store.count(), 1),
            session=self.session,
        )

    async def _call(self, method, request, name: str = "CheckIn"):
        """Call the unary method ``name``, retrying with jittered exponential backoff while the server is
        unreachable (it may be restarting), for at most ``unreachable_after_s``."""
        delay, since, limit = self.cfg.retry_s, time.monotonic(), self.cfg.unreachable_after_s
        warned = False
        while True:
            left = None if limit is None else limit - (time.monotonic() - since)
            timeout = self.cfg.call_timeout_s if left is None else max(min(self.cfg.call_timeout_s, left), 0.5)
            try:
                return await method(request, metadata=self._signer.metadata(name), timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise AuthError(f"server {self.cfg.server} refused this device: {e.details()}") from None
                if e.code() == grpc.StatusCode.UNAVAILABLE and tls_failure(e.details()):  # waiting does not mend it
                    raise TransportError(
                        f"the TLS handshake with server {self.cfg.server} failed; expected its CA's certificate "
                        f"(--tls-ca, or the kit's ca.pem) and a client certificate it trusts ({e.details()})"
                    ) from None
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise TransportError(f"{e.code().name}: {e.details()}") from None
                if limit is not None and time.monotonic() - since >= limit:
                    why = "did not answer" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "unreachable"
                    raise TransportError(f"server {self.cfg.server} {why} for {limit:.0f} s") from None
                if not warned:  # say so at once (a wrong address was silent until the limit)
                    closed = self.cfg.tls_ca is None and "socket closed" in (e.details() or "").lower()
                    log.warning(
                        "device %s: server %s unreachable (%s)%s; retrying for %s",
                        self.cfg.device_id,
                        self.cfg.server,
                        e.details() or e.code().name,
                        " (a server that speaks TLS closes plaintext connections: give --tls-ca)" if closed else "",
                        "ever" if limit is None else f"up to {limit:.0f} s",
                    )
                    warned = True
                await asyncio.sleep(jittered(delay, self._jitter))
                delay = min(delay * 2, self.cfg.max_retry_s)

    async def _run_task(self, stub, task: pb.Task) -> float:
        """Run one task and report it; return the reconnect delay."""
        self.stats.tasks += 1
        fault = self.fault(task.round) if self.fault else None
        received = time.monotonic()  # report_deadline_s counts from here
        try:
            plan = Plan.from_json(task.plan)
            self.stats.last_round, self.stats.total_rounds = max(self.stats.last_round, plan.round), plan.rounds
            log.info(
                "device %s: round %d: got a %s task%s",
                self.name,
                task.round,
                plan.kind,
                f" of task {plan.task.name!r}" if plan.user_task and plan.task is not None else "",
            )
            check_task(plan, self.task)  # before downloading: a device runs only the task installed on it
            weights = await self._download(stub, task)
            if fault == "offline":  # gone without a word; back later
                return self.cfg.max_retry_s
            header, update, new_state = await self._execute(plan, task, weights, fault, received)
            stage = secure_stage(plan.extra) if plan.kind == "train" else None
            if stage is not None:
                return await self._secure_report(stub, task, plan, stage, header, update, new_state, fault)
            payload = update if isinstance(update, bytes) else encode_params(update) if update else b""
            header.update_bytes = len(payload)
        except (TaskAborted, BudgetExhausted) as e:  # eligibility lost, or DP-SGD's budget spent: sits out
            self.stats.aborted += 1
            log.warning("device %s: round %d: aborted its task: %s", self.name, task.round, e)
            header, payload = (
                pb.ReportHeader(task_id=task.task_id, round=task.round, status=pb.ABORTED, reason=str(e)),
                b"",
            )
        except (HamrahError, RuntimeError, ValueError, ArithmeticError, AttributeError, LookupError, TypeError) as e:
            # what a server's plan or checkpoint still breaks in code that trusts it fails the task, not the device
            why = str(e) if isinstance(e, (HamrahError, RuntimeError, ValueError)) else f"{type(e).__name__}: {e}"
            self.stats.failed += 1
            log.error("device %s: round %d: failed its task: %s", self.name, task.round, why)
            header, payload = (
                pb.ReportHeader(task_id=task.task_id, round=task.round, status=pb.FAILED, reason=why[:500]),
                b"",
            )
        except grpc.aio.AioRpcError as e:
            self.stats.refused += 1
            self.stats.messages.append(f"round {task.round}: checkpoint refused: {e.details()}")
            log.warning("device %s: round %d: checkpoint refused: %s", self.name, task.round, e.details())
            return self.cfg.retry_s
        else:
            log.info(
                "device %s: round %d: %s task done: %d examples, %s; %d bytes down, %d bytes up",
                self.name,
                task.round,
                plan.kind,
                header.num_examples,
                ", ".join(f"{k} {v:.4g}" for k, v in json.loads(header.metrics).items() if k in _LOGGED),
                task.checkpoint_bytes,
                len(payload),
            )
            accepted, wait = await self._report(stub, header, payload)
            if accepted:  # keep c_i and the error-feedback residuals only once the server has the update
                self.pipeline_states = self._pending_pipeline
                if new_state is not None:
                    self.store.save_client_state(new_state)
            return wait
        return (await self._report(stub, header, payload))[1]

    async def _secure_report(
        self,
        stub,
        task: pb.Task,
        plan: Plan,
        stage,
        header: pb.ReportHeader,
        update: Params,
        new_state,
        fault: str | None,
    ) -> float:
        """Send the update through secure aggregation; return the reconnect delay."""
        drop = fault.split(":", 1)[1] if fault and fault.startswith("drop:") else None
        identity = SecAggIdentity.load(self.cfg.signing_key, self.cfg.tls_ca) if stage.malicious_server else None
        call = stub.SecureAggregation(metadata=self._signer.metadata("SecureAggregation"))
        session = SecureSession(call, task, drop_before=drop, timeout_s=self.cfg.call_timeout_s)
        equal = plan_pipeline(plan.extra)[0].equal_weights
        try:
            wait = await session.run(
                stage,
                update,
                int(header.num_examples),
                json.loads(header.metrics),
                plan.extra,
                equal,
                self.cfg.client_key,
                pending := dict(self.pipeline_states),
                identity,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthError(f"server {self.cfg.server} refused this device: {e.details()}") from None
            self.stats.refused += 1
            self.stats.messages.append(f"round {task.round}: secure aggregation refused: {e.details()}")
            return self.cfg.retry_s
        if wait is None:  # dropped out on purpose (simulated)
            return self.cfg.max_retry_s
        self.stats.reported += 1
        self.pipeline_states = pending
        if new_state is not None:
            self.store.save_client_state(new_state)
        return wait

    async def _download(self, stub, task: pb.Task) -> dict:
        call = stub.DownloadCheckpoint(
            pb.CheckpointRequest(task_id=task.task_id),
            metadata=self._signer.metadata("DownloadCheckpoint"),
            timeout=self.cfg.call_timeout_s,
        )
        limit = int(self.cfg.max_checkpoint_mb * 2**20)
        return await download(call, task.checkpoint_bytes, task.checkpoint_sha256, limit)

    async def _execute(self, plan: Plan, task: pb.Task, tensors: dict, fault: str | None, received: float):
        params = {k: v for k, v in tensors.items() if not k.startswith(BROADCAST_PREFIX)}
        broadcast = {k[len(BROADCAST_PREFIX) :]: v for k, v in tensors.items() if k.startswith(BROADCAST_PREFIX)}
        start = time.monotonic()
        if fault == "fail":
            raise RuntimeError("simulated device failure mid-task")
        # the chain's state of this task: adopted once the server accepts the report (an aborted task's
        # thread, still running, writes into this copy only)
        self._pending_pipeline = dict(self.pipeline_states)
        stopped = threading.Event()  # the training thread stops at its next step once set
        job = TaskJob(
            self.store,
            self.task if plan.user_task else None,
            self.cfg.client_key,
            self._pending_pipeline,
            self.cfg.max_example_epsilon,
            stopped.is_set,
        )
        work = asyncio.ensure_future(asyncio.to_thread(job.run, plan, params, broadcast or None))
        late = received + task.report_deadline_s if task.report_deadline_s > 0 and not self.site else math.inf
        while not work.done():
            state = self.state.read()
            why = None
            if not state.eligible and not self.site:
                why = f"eligibility lost mid-task: {', '.join(state.blockers())}"
            elif time.monotonic() > late:  # a report now would come after the server stopped waiting
                why = f"still training at the report deadline ({task.report_deadline_s:g} s after the task came)"
            if why is not None:  # no more work on it: not on a device in use, not for a round that is over
                stopped.set()
                work.add_done_callback(lambda f: f.exception())  # the thread stops; its result is dropped
                raise TaskAborted(why)
            await asyncio.wait({work}, timeout=self.cfg.poll_s)
        num_examples, metrics, update, new_state = work.result()
        task_metrics = metrics.pop(TASK_METRICS, None)
        metrics["duration_s"] = time.monotonic() - start
        header = pb.ReportHeader(
            task_id=task.task_id,
            round=task.round,
            status=pb.COMPLETED,
            num_examples=num_examples,
            metrics=json.dumps(metrics).encode(),
            task_metrics=encode_task_metrics(task_metrics) if task_metrics else b"",
        )
        return header, update, new_state

    async def _report(self, stub, header: pb.ReportHeader, payload: bytes) -> tuple[bool, float]:
        """Send a report; return (accepted, reconnect delay)."""

        async def parts():
            yield pb.ReportPart(header=header)
            if header.status == pb.COMPLETED:
                for piece in chunks(payload):
                    yield pb.ReportPart(chunk=pb.Chunk(data=piece))

        try:
            reply = await stub.Report(
                parts(), metadata=self._signer.metadata("Report"), timeout=self.cfg.call_timeout_s
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthError(f"server {self.cfg.server} refused this device: {e.details()}") from None
            self.stats.refused += 1
            self.stats.messages.append(f"round {header.round}: report refused: {e.details()}")
            return False, self.cfg.retry_s
        if header.status == pb.COMPLETED:
            self.stats.reported += 1
        return True, reply.reconnect_after_s
