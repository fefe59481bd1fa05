"""What the real server may claim about privacy, and the books that back the claim.

- **Which epsilon is provable.** Central DP-FedAvg's accounting (Poisson or fixed-size sampling,
  McMahan et al. 2018) assumes the server *draws* the cohort at random from the whole population. The
  real server takes eligible devices as they check in, which nobody can show to be such a draw, so a
  sampling-based epsilon is never printed or recorded here: ``privacy.target_epsilon`` with
  ``mode = "central"`` is refused at config time, and noise without a target runs with no epsilon
  claimed. Distributed DP (``mode = "distributed"``) is accounted here without sampling amplification
  (every round charged as if every device took part), which holds whoever checks in, so it is claimed.
  DP-FTRL (``mode = "ftrl"``, Kairouz et al. 2021) needs no sampling, only that each
  device contributes at most once per tree of ``tree_rounds`` rounds: the server enforces that by
  refusing a second report of one device within a tree, and then reports the epsilon it can prove.
  Local DP's accounting charges every round as if every client took part, which holds whoever checks in.
- **The books live with the checkpoints.** The budget ledger, the stages' server state (adaptive
  clipping's norm, DP-FTRL's tree seed) and the tree's participants are rows of ``state.db``
  (:meth:`hamrah.server.state.ServerStore.stage_privacy`), written in the same SQLite transaction as the
  round they belong to. Deleting them alone is impossible without editing the database, and a state
  folder whose checkpoints have no ledger is refused with :class:`DataError`.
"""

from __future__ import annotations

import logging

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.pipeline import PipelineRun, PipelineSpec
from hamrah.pipeline.distributed_accounting import DistributedAccountant, ledger_to_dict, restore_ledger
from hamrah.privacy.ftrl import TreeState
from hamrah.privacy.ledger import accountant_from_dict, accountant_to_dict
from hamrah.privacy.server_state import server_state_from_dict, server_state_to_dict

log = logging.getLogger("hamrah.server")
LEDGER_KEY, STATE_KEY, PARTICIPANTS_KEY = "ledger", "pipeline_state", "ftrl_participants"


def refuse_unprovable(spec: PipelineSpec, secure: bool) -> None:
    """Refuse, before the server starts, a privacy setting whose epsilon the server could not prove.

    Raises:
        ConfigError: a budget on sampling-based accounting, or DP-FTRL with secure aggregation (the
            once-per-tree rule is enforced on each decoded report, which a secure sum hides).
    """
    dp = spec.dp
    if dp is None:
        return
    if spec.claims_sampling and dp.target_epsilon is not None:
        raise ConfigError(
            f'privacy.mode = "{dp.mode}" with privacy.target_epsilon on the server: its epsilon assumes {dp.sampling} '
            "sampling of the population, but the server takes the devices that check in, so that epsilon would not "
            'be a guarantee; expected privacy.mode = "ftrl" (DP-FTRL: no sampling assumed, each device at most once '
            "per tree of privacy.tree_rounds rounds) or no target_epsilon (noise added, no epsilon claimed)"
        )
    if dp.mode == "ftrl" and secure:
        raise ConfigError(
            'privacy.mode = "ftrl" with [secure_aggregation] on the server: the once-per-tree rule '
            "DP-FTRL's epsilon needs is enforced on each decoded report, which secure aggregation "
            "hides; expected one of the two"
        )


class ServerPrivacy:
    """The server's privacy books: restore them from ``state.db``, enforce DP-FTRL's participation rule,
    queue them for the round's commit.

    Args:
        run: the pipeline run (its accountant and stage states are restored in place).
        store: the server's :class:`~hamrah.server.state.ServerStore`, or None (nothing persists).

    Raises:
        DataError: checkpoints without a ledger, a ledger behind the checkpoints, or a corrupt entry.
        ConfigError: the saved budget differs from the configured one.
    """

    def __init__(self, run: PipelineRun, store=None):
        self.run, self.store = run, store
        self.ddg = isinstance(run.accountant, DistributedAccountant)
        unsampled = self.ddg and run.accountant.spec.sampling_probability == 1.0  # distributed DP, no amplification
        self.claims = run.accountant is not None and (not run.spec.claims_sampling or unsampled)
        self.tree_rounds = run.spec.tree_rounds
        self.tree, self.members, self.pending = -1, set(), set()
        if run.spec.claims_sampling and not unsampled:
            log.warning(
                "DP noise is added, but no epsilon is claimed: the server takes the devices that check "
                'in, not the random sample the accounting assumes (use privacy.mode = "ftrl")'
            )
        if store is not None:
            self._restore()
        self.committed = run.server_state  # each round attempt starts from the last committed stage state

    def _restore(self) -> None:
        where = f"{self.store.dir / 'state.db'}"
        ledger = self.store.privacy_row(LEDGER_KEY)
        if self.run.accountant is not None:
            if ledger is None and self.store.has_checkpoints():
                raise DataError(
                    f"{self.store.dir}: checkpoints but no privacy ledger in state.db; expected the ledger "
                    "committed with them (a budget cannot restart apart from its model). If those rounds "
                    "ran without [privacy], start a new --state folder"
                )
            if ledger is not None and self.ddg:
                restore_ledger(self.run.accountant, ledger, self.run.delta, where)
                if self.run.accountant.rounds < self.store.last_committed_round():
                    raise DataError(
                        f"{where}: the privacy ledger charges fewer rounds than are committed; expected "
                        "at least as many (the ledger is written with each round)"
                    )
            elif ledger is not None:
                self._restore_ledger(ledger, where)
        state = self.store.privacy_row(STATE_KEY)
        if state is not None:
            try:
                self.run.server_state = server_state_from_dict(self.run.chain, self.run.template, state.get("stages"))
            except ConfigError as err:
                raise DataError(
                    f"{where}: cannot restore the pipeline's server state ({err}); expected the entry "
                    f"this server wrote for stages {', '.join(self.run.chain.names)}"
                ) from None
        members = self.store.privacy_row(PARTICIPANTS_KEY)
        if members is not None:
            self.tree, self.members = int(members.get("tree", -1)), {int(c) for c in members.get("clients", [])}

    def _restore_ledger(self, ledger: dict, where: str) -> None:
        acc, target, delta = accountant_from_dict(ledger, where)
        want = (
            self.run.ledger.target_epsilon if self.run.ledger is not None else None,
            self.run.delta,
            self.run.accountant.method,
        )
        if (target, delta, acc.method) != want:
            raise ConfigError(
                f"{where}: saved budget (epsilon, delta, accountant) = {(target, delta, acc.method)} but "
                f"the run asks for {want}; expected the same budget (a new budget needs a new --state)"
            )
        last = self.store.last_committed_round()
        if acc.rounds < last:
            raise DataError(
                f"{where}: the privacy ledger charges {acc.rounds} rounds but {last} are committed; "
                "expected at least as many (the ledger is written with each round)"
            )
        self.run.accountant.history = acc.history
        log.info("privacy ledger restored: %d rounds", acc.rounds)

    def start_round(self, round_idx: int) -> None:
        """Begin round ``round_idx`` (an attempt): forget reports and stage state of an abandoned attempt
        (DP-FTRL's tree must not advance past a round that was never released), open a new tree."""
        self.pending = set()
        self.run.server_state = self.committed
        if self.tree_rounds is None:
            return
        # the tree the next release joins: the stage's own count of released rounds, not round_idx (after a
        # fallback past a corrupt checkpoint a round number repeats, but a released tree position never does)
        released = next(x.rounds for x in self.run.server_state if isinstance(x, TreeState))
        if released // self.tree_rounds != self.tree:
            self.tree, self.members = released // self.tree_rounds, set()

    def admit(self, client_id: int) -> None:
        """Count one report of ``client_id`` in this round.

        Raises:
            ProtocolError: under DP-FTRL, the device already contributed to this tree (or this round).
        """
        if self.tree_rounds is None:
            return
        if client_id in self.members or client_id in self.pending:
            k = self.tree_rounds
            raise ProtocolError(
                f"device {client_id:08x} already contributed to DP-FTRL tree {self.tree} (rounds "
                f"{self.tree * k + 1}-{(self.tree + 1) * k}); expected at most one report per device "
                "per tree (the epsilon the server reports relies on it)"
            )
        self.pending.add(client_id)

    def record_round(self) -> dict:
        """Charge the committed round; queue the books for its commit; return the record's privacy fields."""
        eps = self.run.record_round()
        self.committed = self.run.server_state
        self.members |= self.pending
        self.pending = set()
        if self.store is not None:
            if self.run.accountant is not None:
                target = self.run.ledger.target_epsilon if self.run.ledger is not None else None
                self.store.stage_privacy(
                    LEDGER_KEY,
                    ledger_to_dict(self.run.accountant, self.run.delta)
                    if self.ddg
                    else accountant_to_dict(self.run.accountant, self.run.delta, target),
                )
            stages = server_state_to_dict(self.run.chain, self.run.server_state)
            if stages:
                self.store.stage_privacy(STATE_KEY, {"stages": stages})
            if self.tree_rounds is not None:
                self.store.stage_privacy(PARTICIPANTS_KEY, {"tree": self.tree, "clients": sorted(self.members)})
        return {"epsilon": eps, "delta": self.run.delta} if self.claims and eps is not None else {}


__all__ = ["LEDGER_KEY", "PARTICIPANTS_KEY", "STATE_KEY", "ServerPrivacy", "refuse_unprovable"]
