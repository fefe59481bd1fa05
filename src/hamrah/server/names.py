"""What the server calls each device in its logs, and which of a site's processes is the newest."""

from __future__ import annotations

SESSIONS_KEPT = 8  # sessions remembered per device (a site's processes)


class DeviceNames:
    """The name each device key checked in with (``hamrah device --name``) and its sessions (one per
    device process, newest last)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.sessions: dict[str, list[str]] = {}

    def checked_in(self, device: str, name: str, session: str = "") -> bool:
        """Note a check-in; return True when it comes from a new session of a device seen before (its
        process restarted)."""
        if name and self.names.get(device) != name:
            self.names[device] = name[:64]
        seen = self.sessions.setdefault(device, [])
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
