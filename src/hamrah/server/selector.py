"""Selectors: accept device check-ins, forward as many as the Coordinator asks for, and turn the
rest away with a reconnect time (pace steering; Bonawitz et al. 2019, sections 2.3 and 4.2)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from hamrah.server.coordinator import Coordinator
from hamrah.transport.plan import OUT_OF_RUN
from hamrah.transport.proto import fl_pb2 as pb

log = logging.getLogger("hamrah.server")
CROSS_SILO = "cross_silo"  # CheckInResponse.mode of a cross-silo server


@dataclass
class Selector:
    index: int
    coordinator: Coordinator
    hold_s: float
    forwarded: int = 0
    turned_away: int = 0

    async def check_in(self, device: str, request: pb.CheckInRequest) -> pb.CheckInResponse:
        """Answer one check-in: a task if the device is drawn for the open round's slots, else when to
        come back."""
        coord = self.coordinator
        if coord.cfg.cross_silo:
            reply = await self._site_check_in(device, request)
            reply.mode = CROSS_SILO
            return reply
        if coord.finished:
            return pb.CheckInResponse(finished=True, message="training is over")
        state = request.state
        if not (state.idle and state.charging and state.unmetered):
            return pb.CheckInResponse(reconnect_after_s=coord.cfg.reconnect_max_s, message="device is not eligible")
        return await self._draw(device)

    async def _site_check_in(self, device: str, request: pb.CheckInRequest) -> pb.CheckInResponse:
        """Cross-silo: no eligibility check; a site that cannot run the task is told why and is out."""
        coord = self.coordinator
        if coord.devices.superseded(device, request.session):  # two processes of one site: the newest is the site
            log.warning("told an older process of device %s to stop: the site runs a newer one", coord.who(device))
            return pb.CheckInResponse(finished=True, message=f"{OUT_OF_RUN}: a newer process of this site checked in")
        if coord.site_out(device) is None and request.num_examples == 0 and not coord.finished:
            coord.site_failed(device, "its example store holds no examples; expected at least one example")
        reason = coord.site_out(device)
        if reason is not None:
            log.warning("told device %s it is out of the run: %s", coord.who(device), reason)
            return pb.CheckInResponse(finished=True, message=f"{OUT_OF_RUN}: {reason}")
        if coord.finished:
            return pb.CheckInResponse(finished=True, message="training is over")
        reply = await self._draw(device)
        if reply.HasField("task"):  # one line per task; a site waiting for the next round polls quietly
            kind = "evaluate" if reply.task.kind == pb.EVALUATE else "train"
            log.info(
                "round %d: device %s (%d examples) gets a %s task",
                reply.task.round,
                coord.who(device),
                request.num_examples,
                kind,
            )
        return reply

    async def _draw(self, device: str) -> pb.CheckInResponse:
        coord = self.coordinator
        deadline = time.monotonic() + self.hold_s
        while not coord.has_task(device):
            task = await coord.request(device)
            if task is not None:
                self.forwarded += 1
                return pb.CheckInResponse(task=task)
            left = deadline - time.monotonic()
            rs = coord.current
            if left <= 0 or coord.finished or coord.draining or (rs is not None and rs.selection_open):
                break  # still selecting but not for this device (sitting out, or already waiting): no spin
            await coord.wait_for_selection(left)
        self.turned_away += 1
        if coord.finished:
            return pb.CheckInResponse(finished=True, message="training is over")
        return pb.CheckInResponse(reconnect_after_s=coord.reconnect_after(), message="no slot in this round")
