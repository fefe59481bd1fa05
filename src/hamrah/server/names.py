"""What the server calls each device in its logs, and which of a site's processes is the newest."""

from __future__ import annotations

import collections

SESSIONS_KEPT = 8  # sessions remembered per device (a site's processes)
DEVICES_KEPT = 100_000  # devices remembered, least recently seen forgotten first (as the rate limiter's buckets)


class DeviceNames:
    """The name each device key checked in with (``hamrah device --name``) and its sessions (one per
    device process, newest last). At most ``max_devices`` are kept, the least recently seen forgotten
    first: on a server without tokens any caller may claim fresh device ids, which must not grow memory."""

    def __init__(self, max_devices: int = DEVICES_KEPT) -> None:
        self.max_devices = max_devices
        self.names: dict[str, str] = {}
        self.sessions: collections.OrderedDict[str, list[str]] = collections.OrderedDict()

    def checked_in(self, device: str, name: str, session: str = "") -> bool:
        """Note a check-in; return True when it comes from a new session of a device seen before (its
        process restarted)."""
        if name and self.names.get(device) != name:
            self.names[device] = name[:64]
        seen = self.sessions.pop(device, [])
        self.sessions[device] = seen  # the most recently seen last
        while len(self.sessions) > self.max_devices:
            self.names.pop(self.sessions.popitem(last=False)[0], None)
        if not session or session in seen:
            return False
        seen.append(session)
        del seen[:-SESSIONS_KEPT]
        return len(seen) > 1

    def superseded(self, device: str, session: str) -> bool:
        """``session`` is an older process of a device that has checked in from a newer one."""
        return bool(session) and session in self.sessions.get(device, [])[:-1]

    def who(self, device: str) -> str:
        """How the logs name ``device``: the name it checked in with and its key's first digits."""
        name = self.names.get(device)
        return f"{name} [{device[:8]}]" if name else device[:8]
