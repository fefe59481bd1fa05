"""The privacy budget: a target (epsilon, delta), the rounds spent against it, saved across restarts.

Before each round the server calls :meth:`BudgetLedger.check_round`, which refuses (BudgetExhausted) the
round that would take epsilon past the target; after it, :meth:`BudgetLedger.record_round`. Before a
run, :meth:`BudgetLedger.refuse_start` refuses a plan that cannot fit, naming the largest feasible
number of rounds and the noise multiplier the plan would need. The state is a small JSON document
written atomically (temporary file + ``os.replace``), so a crash mid-write leaves the old file intact.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hamrah.core.errors import BudgetExhausted, ConfigError, DataError
from hamrah.core.files import write_atomic
from hamrah.core.numbers import check_number
from hamrah.privacy.accounting import PrivacyAccountant, RoundSpec, epsilon_of

FORMAT = "hamrah-dp-ledger"
VERSION = 1


class BudgetLedger:
    """A privacy budget and the rounds composed against it.

    Args:
        target_epsilon: the budget's epsilon.
        delta: the budget's delta.
        spec: the mechanism of a planned round.
        method: "rdp" or "pld".
        history: (spec, rounds) already spent.

    Raises:
        ConfigError: the target or delta are out of range.

    Example:
        >>> ledger = BudgetLedger(2.0, 1e-5, RoundSpec.poisson(1.0, 0.01))
        >>> round(ledger.check_round(), 4), round(ledger.record_round(), 4)
        (0.9555, 0.9555)
    """

    def __init__(
        self,
        target_epsilon: float,
        delta: float,
        spec: RoundSpec,
        method: str = "rdp",
        history: Sequence[tuple[RoundSpec, int]] = (),
    ):
        check_number("target_epsilon", target_epsilon, 0.0, open_low=True)
        check_number("delta", delta, 0.0, 1.0, open_low=True, open_high=True)
        self.target_epsilon = float(target_epsilon)
        self.delta = float(delta)
        self.accountant = PrivacyAccountant(spec, method, history)

    @property
    def rounds_done(self) -> int:
        """Return the number of rounds charged so far."""
        return self.accountant.rounds

    def spent(self) -> float:
        """Return the epsilon spent so far at the budget's delta."""
        return self.accountant.epsilon(self.delta)

    def check_round(self, spec: RoundSpec | None = None) -> float:
        """Return epsilon after one more round of ``spec``; raise if that would exceed the target.

        Raises:
            BudgetExhausted: the next round would take epsilon past the target.
        """
        spec = spec or self.accountant.spec
        after = epsilon_of(self.accountant.history + [(spec, 1)], self.delta, self.accountant.method)
        if after > self.target_epsilon:
            raise BudgetExhausted(
                f"privacy budget: round {self.rounds_done + 1} would bring epsilon to {after:.4g} > target "
                f"{self.target_epsilon:g} at delta {self.delta:g}; "
                f"spent {self.spent():.4g} in {self.rounds_done} rounds"
            )
        return after

    def record_round(self, spec: RoundSpec | None = None) -> float:
        """Charge one round of ``spec`` (default: the planned spec); return the epsilon spent."""
        self.accountant.step(1, spec)
        return self.spent()

    def refuse_start(self, rounds: int) -> None:
        """Raise unless ``rounds`` more rounds of the planned spec fit in the budget.

        Raises:
            ConfigError: naming the largest number of rounds that fits and the noise multiplier that
                would make ``rounds`` fit.
        """
        eps = self.accountant.epsilon(self.delta, rounds)
        if eps <= self.target_epsilon:
            return
        feasible = self.accountant.rounds_possible(self.target_epsilon, self.delta)
        try:
            needed = self.accountant.noise_for(self.target_epsilon, self.delta, rounds)
            z = f"noise_multiplier >= {math.ceil(needed * 1e4) / 1e4:.4f}"  # rounded up: still fits
        except ConfigError:
            z = "no noise multiplier (the budget is already spent)"
        raise ConfigError(
            f"privacy budget: {rounds} rounds at noise_multiplier {self.accountant.spec.noise_multiplier:g} reach "
            f"epsilon {eps:.4g} > target {self.target_epsilon:g} at delta {self.delta:g} "
            f"(already spent {self.spent():.4g} in {self.rounds_done} rounds); expected at most {feasible} rounds, "
            f"or {z} for {rounds} rounds"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the ledger as a JSON-ready dict (the events composed so far and the spent epsilon)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "method": self.accountant.method,
            "spec": self.accountant.spec.to_dict(),
            "history": [{"spec": s.to_dict(), "rounds": n} for s, n in self.accountant.history],
            "rounds_done": self.rounds_done,
            "spent_epsilon": self.spent(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "ledger") -> BudgetLedger:
        """Return the ledger :meth:`to_dict` wrote.

        Raises:
            DataError: a field is missing or malformed, or the stored epsilon disagrees with the events.
        """
        try:
            if d.get("format") != FORMAT or d.get("version") != VERSION:
                raise ValueError(
                    f"format/version {d.get('format')!r}/{d.get('version')!r}, expected {FORMAT!r}/{VERSION}"
                )
            history = [(RoundSpec.from_dict(h["spec"]), int(h["rounds"])) for h in d["history"]]
            if any(n < 0 for _, n in history):
                raise ValueError("negative round count")
            ledger = cls(d["target_epsilon"], d["delta"], RoundSpec.from_dict(d["spec"]), d["method"], history)
            stored = float(d["spent_epsilon"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # ConfigError is a ValueError
            raise DataError(
                f"{source}: corrupt privacy ledger ({err}); expected the JSON BudgetLedger.save writes"
            ) from err
        if not math.isclose(ledger.spent(), stored, rel_tol=1e-6, abs_tol=1e-9):
            raise DataError(
                f"{source}: corrupt privacy ledger: stored spent epsilon {stored:.6g} but its events "
                f"give {ledger.spent():.6g}"
            )
        return ledger

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ledger to ``path`` atomically (temporary file in the same folder, fsync, os.replace).

        Raises:
            DataError: the folder does not exist or cannot be written.
        """
        path = Path(path)
        try:
            write_atomic(path, json.dumps(self.to_dict(), indent=1))
        except OSError as err:
            raise DataError(
                f"{path}: cannot write the privacy ledger ({err.strerror}); expected an existing, writable folder"
            ) from err

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BudgetLedger:
        """Read a ledger saved by :meth:`save`.

        Raises:
            DataError: the file is missing, not JSON, or not a valid ledger.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"{path}: cannot read the privacy ledger ({err.strerror})") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: corrupt privacy ledger: not JSON ({err})") from err
        if not isinstance(data, dict):
            raise DataError(f"{path}: corrupt privacy ledger: expected a JSON object")
        return cls.from_dict(data, str(path))

    @classmethod
    def resume(
        cls, path: str | os.PathLike[str], target_epsilon: float, delta: float, spec: RoundSpec, method: str = "rdp"
    ) -> BudgetLedger:
        """Return the ledger saved at ``path`` (a server restart), or a new one when there is no file.

        Raises:
            DataError: the file exists but is corrupt.
            ConfigError: the saved budget (target, delta, accountant) differs from the configured one.
        """
        if not Path(path).exists():
            return cls(target_epsilon, delta, spec, method)
        ledger = cls.load(path)
        saved = (ledger.target_epsilon, ledger.delta, ledger.accountant.method)
        if saved != (float(target_epsilon), float(delta), method):
            raise ConfigError(
                f"{path}: saved budget (epsilon, delta, accountant) = {saved} but the run asks for "
                f"{(float(target_epsilon), float(delta), method)}; expected the same budget "
                "(start a new ledger file to start a new budget)"
            )
        ledger.accountant.spec = spec
        return ledger


def accountant_to_dict(
    accountant: PrivacyAccountant, delta: float, target_epsilon: float | None = None
) -> dict[str, Any]:
    """Return the rounds an accountant has composed as a JSON-ready dict (a budget ledger without a
    target when ``target_epsilon`` is None): what a server keeps with its checkpoints."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "target_epsilon": target_epsilon,
        "delta": float(delta),
        "method": accountant.method,
        "spec": accountant.spec.to_dict(),
        "history": [{"spec": s.to_dict(), "rounds": n} for s, n in accountant.history],
        "rounds_done": accountant.rounds,
        "spent_epsilon": accountant.epsilon(delta),
    }


def accountant_from_dict(d: dict[str, Any], source: str) -> tuple[PrivacyAccountant, float | None, float]:
    """Return (accountant, target epsilon or None, delta) from :func:`accountant_to_dict`'s dict.

    Raises:
        DataError: a field is missing or malformed, or the stored epsilon disagrees with the events.
    """
    if d.get("target_epsilon") is not None:
        ledger = BudgetLedger.from_dict(d, source)
        return ledger.accountant, ledger.target_epsilon, ledger.delta
    try:
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise ValueError(f"format/version {d.get('format')!r}/{d.get('version')!r}, expected {FORMAT!r}/{VERSION}")
        history = [(RoundSpec.from_dict(h["spec"]), int(h["rounds"])) for h in d["history"]]
        if any(n < 0 for _, n in history):
            raise ValueError("negative round count")
        delta = float(d["delta"])
        accountant = PrivacyAccountant(RoundSpec.from_dict(d["spec"]), d["method"], history)
        spent, stored = accountant.epsilon(delta), float(d["spent_epsilon"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{source}: corrupt privacy ledger ({err}); expected the ledger the server wrote") from err
    if not math.isclose(spent, stored, rel_tol=1e-6, abs_tol=1e-9):
        raise DataError(
            f"{source}: corrupt privacy ledger: stored spent epsilon {stored:.6g} but its events give {spent:.6g}"
        )
    return accountant, None, delta
