"""A chain's server state as plain data: what a plan broadcasts and what a server keeps across restarts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.core.pipeline import Chain


def server_state_to_dict(chain: Chain, state: tuple[Any, ...], client_side_only: bool = False) -> dict[str, Any]:
    """Return the stages' server states that are dataclasses (adaptive clipping's norm) as plain data.

    Args:
        chain: the stages. state: the chain's server state.
        client_side_only: only the states clients read (``ctx.server_state``): what a plan broadcasts.
    """
    return {
        st.name: dataclasses.asdict(x)
        for st, x in zip(chain.stages, state)
        if dataclasses.is_dataclass(x) and not isinstance(x, type) and (st.traits.client_side or not client_side_only)
    }


def server_state_from_dict(chain: Chain, template: Params, data: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """Return the chain's fresh server state with the entries of :func:`server_state_to_dict` put back.

    Raises:
        ConfigError: an unknown stage, an unknown field, or a value that is not a finite number.
    """
    state = list(chain.init_server(template))
    names = {st.name: i for i, st in enumerate(chain.stages)}
    for name, fields in (data or {}).items():
        i = names.get(name)
        if i is None or not dataclasses.is_dataclass(state[i]) or not isinstance(fields, Mapping):
            raise ConfigError(
                f"pipeline server state: stage {name!r} has no server state to restore; expected one "
                f"of {[n for n, j in names.items() if dataclasses.is_dataclass(state[j])]}"
            )
        known = {f.name: type(getattr(state[i], f.name)) for f in dataclasses.fields(state[i])}
        for key, value in fields.items():
            if (
                key not in known
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (known[key] is float and value == 0)
            ):
                raise ConfigError(
                    f"pipeline server state: {name}.{key} = {value!r}: expected a finite number "
                    f"(> 0 for a norm, >= 0 for a count) for one of {sorted(known)}"
                )
        state[i] = dataclasses.replace(state[i], **{k: known[k](v) for k, v in fields.items()})
    return tuple(state)


__all__ = ["server_state_from_dict", "server_state_to_dict"]
