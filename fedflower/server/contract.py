"""What every fedflower strategy declares to the rest of a run, with the defaults.

The run asks the strategy object, never its name: the rules between config groups
(:mod:`fedflower.server.rules`: DP and SecAgg+ need :attr:`~StrategyContract.synchronous`
rounds, robust rules that :attr:`~StrategyContract.combines_single_updates` cannot run under
DP, :meth:`~StrategyContract.check_clients` bounds options by the federation's size), the
stragglers (:attr:`~StrategyContract.drops_stragglers`), the deadline's quorum
(:meth:`~StrategyContract.min_replies`), the privacy budget
(:meth:`~StrategyContract.affordable_rounds`) and ``results.json``
(:attr:`~StrategyContract.rejected`). :class:`~fedflower.server.checked.CheckedFedAvg`,
:class:`~fedflower.server.async_strategy.AsyncStrategy` and the privacy wrappers around Flower's
DP strategies (:mod:`fedflower.server.privacy`) derive from it, so a plugin built on any of them
has every declaration and overrides only what differs (FedProx: ``drops_stragglers = False``).
"""

from __future__ import annotations

from flwr.serverapp.strategy import Strategy


class StrategyContract(Strategy):
    """A Flower strategy plus what it declares to the run (each with its default).

    Listed first among a strategy's bases, before the Flower strategy that does the work
    (``class CheckedFedAvg(StrategyContract, flwr.serverapp.strategy.FedAvg)``): it defines
    none of Flower's hooks, only the declarations below.
    """

    synchronous: bool = True
    """Rounds with one sample of clients: what DP accounting and SecAgg+ need."""
    combines_single_updates: bool = False
    """Whether the rule selects or trims single updates (robust rules): DP hands it one mean."""
    num_malicious_nodes: int = 0
    """Malicious clients the aggregation rule tolerates (robust rules; 0: none)."""
    min_available_nodes: int = 0
    """Nodes to wait for before the first round."""
    min_train_nodes: int = 1
    """Usable training replies a round needs (the deadline's quorum)."""
    min_evaluate_nodes: int = 1
    """Usable evaluation replies a round needs (the deadline's quorum)."""

    @property
    def drops_stragglers(self) -> bool:
        """Whether stragglers' partial work is dropped (FedAvg, the paper's baseline) or kept."""
        return True

    @property
    def rejected(self) -> int:
        """Replies that brought no usable update so far (``rejected_updates`` of the run)."""
        return 0

    def check_clients(self, num_clients: int) -> None:
        """Refuse options a federation of ``num_clients`` cannot meet (``ConfigError``)."""

    def affordable_rounds(self, num_rounds: int) -> int:
        """How many of ``num_rounds`` the strategy will run (a privacy budget may stop it early).

        Raises ``ConfigError`` when it can run none.
        """
        return num_rounds
