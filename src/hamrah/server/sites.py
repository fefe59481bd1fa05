"""Cross-silo rounds: the part of :class:`hamrah.server.machine.RoundMachine` only they use.

Cross-silo (``cross_silo``): the goal and target are every site still in the run, the selection window
is 0, and a site that fails its task (a FAILED report, or :class:`SiteFailed` at check-in) is out of
the run: the round goes on without it, later rounds need one site fewer (unless ``min_reports`` is
set), and when fewer sites remain than ``min_reports`` (or none) the run fails at once; a site whose
report the server refuses (:func:`out_if_refused`) fails its task the same way. With
``final_eval``, the last commit is followed by an evaluation round of the final model (every site gets
an evaluate task; :class:`SitesEvaluated` carries their scores; nothing is committed), then the run ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hamrah.core.errors import ProtocolError
from hamrah.server import events as ev
from hamrah.server.rounds import FINISHED, REPORTING, SELECTING, RoundState, TaskInfo


@contextmanager
def out_if_refused(feed: Callable, cross_silo: bool, device: str, info: TaskInfo, rs: RoundState) -> Iterator[None]:
    """Around the checks of what a report carries: cross-silo, a report they refuse (an update that does
    not fit the run's model, e.g. a site set up for another task; metrics out of range) fails the site's
    task, so the site is out of the run like one that reports FAILED (asked again, it would send the same
    report every round); the refusal still reaches the device. Cross-device the task just goes unanswered."""
    try:
        yield
    except ProtocolError as e:
        if cross_silo:
            if rs.secure is not None:
                rs.secure.leave(info.task_id)
            feed(ev.DeviceAborted(device, info.task_id, info.round, True, f"its report was refused: {e}"[:300]))
        raise


class SiteExits:
    """Mixed into the round machine, whose ``cfg``, ``phase``, ``current``, ``out`` and phase steps it uses."""

    def sites_left(self) -> int:
        """Cross-silo: the sites still in the run."""
        return self.cfg.goal - len(self.out)

    def needed(self) -> int:
        """Reports (and selected devices, cross-silo) a round needs to commit: cross-silo, every site the
        round in flight asked, less those that went out of the run during it (a site that rejoins
        mid-round waits for the next round)."""
        if self.cfg.reports_needed:
            return self.cfg.reports_needed
        rs = self.current
        return max(rs.goal - rs.sites_out if rs is not None else self.sites_left(), 1)

    def min_selected(self) -> int:
        return self.needed() if self.cfg.cross_silo else self.cfg.min_selected

    def _site_out(self, device: str, reason: str) -> list[ev.Output]:
        """Cross-silo: take ``device`` out of the run; the round in flight goes on without it."""
        if not self.cfg.cross_silo or device in self.out or self.phase == FINISHED:
            return []
        self.out[device] = reason
        out: list[ev.Output] = [ev.SiteOut(device, reason, self.sites_left())]
        if self.sites_left() < max(self.cfg.reports_needed, 1):
            self.failure = (
                f"{self.sites_left()} of {self.cfg.goal} sites remain, {max(self.cfg.reports_needed, 1)} needed "
                f"(server.min_reports); expected every site able to run the task (see the site failures above)"
            )
            self.phase, self.current = FINISHED, None
            return out + [ev.RunFailed(self.failure)]
        rs = self.current
        if rs is None or self.phase not in (SELECTING, REPORTING):
            return out
        if self.has_task(device):  # a failed task is an answer: the caller closes the phase if it was the last
            rs.sites_out += 1
            return out
        rs.goal, rs.target = rs.goal - 1, rs.target - 1  # the round no longer waits for it
        if device in rs.candidates:
            rs.candidates.remove(device)
        if self.phase == SELECTING and (rs.slots() <= 0 or rs.counted >= rs.goal):
            return out + self._close_selection(rs)
        return out + (self._check_reporting(rs) if self.phase == REPORTING else [])

    def _site_back(self, device: str) -> list[ev.Output]:
        """A site out of the run checked in from a new process: it is back from the next round on."""
        if device not in self.out or self.phase == FINISHED:
            return []
        del self.out[device]  # a round in flight keeps its smaller goal; the next one counts the site
        return [ev.SiteBack(device, self.sites_left())]
