"""The liquidator: takes over what users below their maintenance margin cannot carry, resolves
the bankruptcies liquidation leaves, and sells down what it took over.

Each tick (``decide``) the bot:

1. brings its :class:`~bots.margin_view.MarginView` up to date from the view's markets and
   oracle prices and from the user accounts that changed (``BotContext.extra["users"]``, a
   :class:`~bots.margin_view.UserSource` or a live mapping of accounts; ``extra["state"]``,
   the program's ``State``, if the keeper has it): an oracle move re-values only the
   positions it prices; no full rescan. The bot asks for every user
   (``Subscriptions.users``), so run on its own (``keepers bot liquidator``, ``keepers run``)
   it gets a cursor of the process's :class:`~keepers.user_feed.UserFeed`: the node's
   accounts, loaded from ``GET /v1/users`` and kept current from its users stream;
2. resolves every bankrupt user it knows (``ResolvePerpBankruptcy`` per perp market with a
   loss, ``ResolveSpotBankruptcy`` per borrow), as the program requires before anything else
   can happen to that user;
3. walks the liquidatable users, most underwater (largest buffered margin shortage) first, at
   most ``max_liquidations_per_tick``, and sends one liquidation per user, picked by what the
   user holds, in the order the program needs them:

   * a perp position with base (or BAL shares): ``LiquidatePerp`` on the largest notional;
   * a borrow and a deposit: ``LiquidateSpot`` (the largest borrow for the largest deposit);
   * a flat perp position with a loss and a deposit: ``LiquidatePerpPnlForDeposit``;
   * a borrow and a flat perp position with a gain: ``LiquidateBorrowForPerpPnl``;

   each sized within a collateral budget: ``max_position_takeover_pct_of_collateral`` percent
   of the liquidator's free (initial) collateral per user, all of it at most per tick. A perp
   takeover of notional N uses ``N * margin_ratio_initial`` of it; a swap (spot, pnl) is
   charged its full liability value, conservatively. Each instruction carries a limit price
   ``limit_price_slippage_bps`` worse than the oracle, so a stale view cannot overpay;
4. derisks: for each of its own perp positions whose notional exceeds ``max_position_value``,
   a reduce-only order (market, or limit at the oracle less ``derisk_slippage_bps``) for the
   excess not already covered by its open orders on the closing side.

Outcomes teach it (:meth:`Liquidator.on_outcome`): a user the program says has
``SufficientCollateral`` (or any other refusal) is left alone until its account next
changes; a takeover refused because the liquidator lacks collateral stops liquidations until
the liquidator's own account changes.

Amounts are ints at the program's precision: collateral QUOTE_PRECISION, base
BASE_PRECISION, spot tokens the mint's units, prices PRICE_PRECISION, fees
LIQUIDATION_FEE_PRECISION.

Limits: spot positions taken over are not sold down (only perps are derisked); the budget is
an estimate (the program's initial-margin check on the liquidator is the authority); without a
user source (a caller that builds it with no ``extra["users"]`` outside a keeper process) the
bot knows no one to liquidate and only derisks. Its view of an account lags the node by up to
a slot (the node publishes changed accounts once per slot); the program re-checks every
liquidation against the account as it is.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final

from bots.margin_view import MarginView, UserMargin, UserSource, user_source
from keepers.runtime import Action, BotContext, Outcome, Status, Stream, Subscriptions, View
from keepers.runtime.registry import register
from protocol.constants import (
    DEFAULT_LIQUIDATION_MARGIN_BUFFER_RATIO,
    LIQUIDATION_FEE_PRECISION,
    MARGIN_PRECISION,
    PRICE_PRECISION,
    PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions import (
    LiquidateBorrowForPerpPnl,
    LiquidatePerp,
    LiquidatePerpPnlForDeposit,
    LiquidateSpot,
    PlacePerpOrder,
    ResolvePerpBankruptcy,
    ResolveSpotBankruptcy,
)
from protocol.math.bankruptcy import is_user_bankrupt
from protocol.math.margin import calculate_free_collateral
from protocol.math.orders import standardize_base_asset_amount, standardize_price
from protocol.math.position import calculate_base_asset_value_with_oracle_price
from protocol.math.spot_balance import get_token_amount, get_token_value
from protocol.state import PerpMarket, SpotMarket, State, User, UserKey
from protocol.state.order_params import OrderParams
from protocol.state.user import PerpPosition, SpotPosition
from protocol.types import (
    MarginRequirementType,
    MarketType,
    OrderType,
    PositionDirection,
    SpotBalanceType,
)

__all__ = ["Liquidator", "LiquidatorParams"]

BPS: Final = 10_000

LIQUIDATE: Final = "liquidate"
RESOLVE: Final = "resolve"
DERISK: Final = "derisk"


@dataclass(frozen=True, slots=True)
class LiquidatorParams:
    """``[bots.liquidator]`` parameters.

    ``max_position_value``: the notional (QUOTE_PRECISION) of each own perp position the bot
    keeps; above it the excess is sold down (0: close everything taken over).
    ``liquidation_margin_buffer_ratio``: the program's ``State`` value (MARGIN_PRECISION), for
    ranking users by the shortage the program will measure.
    """

    sub_account_id: int = field(default=0, metadata={"minimum": 0})
    max_position_takeover_pct_of_collateral: int = field(default=50, metadata={"minimum": 1})
    max_liquidations_per_tick: int = field(default=8, metadata={"minimum": 1})
    limit_price_slippage_bps: int = field(default=100, metadata={"minimum": 0})
    derisk: bool = True
    max_position_value: int = field(default=0, metadata={"minimum": 0})
    derisk_order_type: str = field(default="market", metadata={"choices": ("market", "limit")})
    derisk_slippage_bps: int = field(default=50, metadata={"minimum": 0})
    liquidation_margin_buffer_ratio: int = field(
        default=DEFAULT_LIQUIDATION_MARGIN_BUFFER_RATIO, metadata={"minimum": 0}
    )

    def __post_init__(self) -> None:
        if self.max_position_takeover_pct_of_collateral > 100:
            raise ValueError("max_position_takeover_pct_of_collateral must be <= 100")
        if max(self.limit_price_slippage_bps, self.derisk_slippage_bps) >= BPS:
            raise ValueError("slippage must be below 10000 bps")


@dataclass(frozen=True, slots=True)
class _Plan:
    instruction: Any
    kind: str
    cost: int  # QUOTE_PRECISION of the budget it uses
    expected_reward: int = 0


def _scale_bps(price: int, bps: int) -> int:
    return price * bps // BPS


def _signed_tokens(position: SpotPosition, market: SpotMarket) -> int:
    amount = get_token_amount(position.scaled_balance, market, position.balance_type)
    return -amount if position.balance_type == SpotBalanceType.Borrow else amount


@register("liquidator")
class Liquidator:
    """The liquidator bot (see the module docstring)."""

    params_type = LiquidatorParams

    def __init__(self, context: BotContext) -> None:
        self._name = context.name
        self._authority = context.authority
        params = context.params
        self.params = params if isinstance(params, LiquidatorParams) else LiquidatorParams()
        state = context.extra.get("state")
        if not isinstance(state, State):
            state = State(
                liquidation_margin_buffer_ratio=self.params.liquidation_margin_buffer_ratio
            )
        self.margin = MarginView(state)
        self._source: UserSource | None = user_source(context.extra.get("users"))
        self._throttled: set[UserKey] = set()
        self._blocked_on: User | None = None  # own account a takeover was refused with
        self._own: User | None = None
        self.sent: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def subscriptions(self) -> Subscriptions:
        # an oracle move is what makes users liquidatable: react to it, not to the interval
        return Subscriptions(
            streams=frozenset({Stream.ORACLE}),
            sub_account_ids=(self.params.sub_account_id,),
            users=True,  # every user account: the process's user feed, unless extra has them
        )

    # --- inputs ------------------------------------------------------------------------------
    def sync(self, view: View) -> None:
        """Markets, then oracle prices, then the users that changed."""
        margin = self.margin
        margin.sync_markets(view.perp_markets, view.spot_markets)
        prices = {}
        for oracle_id in view.oracles:
            data = view.oracle_price_data(oracle_id)
            if data is not None:
                prices[oracle_id] = data
        margin.sync_oracles(prices)
        if self._source is not None:
            changed = self._source.changed_users()
            margin.update_users(changed)
            for user in changed:
                self._throttled.discard(user.key)

    # --- deciding ----------------------------------------------------------------------------
    def decide(self, view: View) -> list[Action]:
        self.sync(view)
        own = view.user(self.params.sub_account_id)
        self._own = own
        if own is None:
            return []
        actions: list[Action] = []
        if not own.is_being_liquidated():
            actions.extend(self._resolutions(own.key))
            # the runtime hands over fresh copies: compare the account, not the object
            if self._blocked_on != own:
                self._blocked_on = None
                actions.extend(self._liquidations(own))
        if self.params.derisk and not own.is_being_liquidated():
            actions.extend(self._derisk(own))
        for action in actions:
            self.sent[action.kind] = self.sent.get(action.kind, 0) + 1
        return actions

    def _resolutions(self, me: UserKey) -> list[Action]:
        actions: list[Action] = []
        for user in self.margin.bankrupt():
            if user.key != me and user.key not in self._throttled:
                actions.extend(self._resolve(user, me))
        return actions

    def _resolve(self, user: User, me: UserKey) -> list[Action]:
        """One resolution per liability: each perp loss, each borrow."""
        authority, sub = user.key
        actions = []
        for perp in user.perp_positions:
            if perp.base_asset_amount == 0 and perp.quote_asset_amount < 0:
                ix: Any = ResolvePerpBankruptcy(me[0], me[1], authority, sub, perp.market_index)
                actions.append(self._action(ix, "resolve_perp_bankruptcy", RESOLVE, user.key))
        for spot in user.spot_positions:
            if spot.balance_type == SpotBalanceType.Borrow and spot.scaled_balance > 0:
                ix = ResolveSpotBankruptcy(me[0], me[1], authority, sub, spot.market_index)
                actions.append(self._action(ix, "resolve_spot_bankruptcy", RESOLVE, user.key))
        return actions

    def _action(
        self,
        instruction: Any,
        kind: str,
        purpose: str,
        user_key: UserKey,
        expected_reward: int = 0,
    ) -> Action:
        market = getattr(instruction, "market_index", None)
        dedupe: Hashable = (purpose, user_key, kind, market)
        return Action(
            instructions=(instruction,),
            kind=kind,
            dedupe_key=dedupe,
            expected_reward=expected_reward,
        )

    def free_collateral(self, own: User) -> int:
        """The liquidator's free initial collateral (QUOTE_PRECISION; 0 if unmeasurable)."""
        try:
            return calculate_free_collateral(
                own, self.margin.markets, MarginRequirementType.Initial
            )
        except ProtocolError:
            return 0

    def _liquidations(self, own: User) -> list[Action]:
        me = own.key
        params = self.params
        remaining = self.free_collateral(own)
        actions: list[Action] = []
        # a few more than needed: some candidates are skipped
        candidates = self.margin.liquidatable(limit=4 * params.max_liquidations_per_tick)
        for candidate in candidates:
            if len(actions) >= params.max_liquidations_per_tick or remaining <= 0:
                break
            user = candidate.user
            if candidate.key == me or candidate.key in self._throttled:
                continue
            if is_user_bankrupt(user):
                actions.extend(self._resolve(user, me))
                continue
            spend = remaining * params.max_position_takeover_pct_of_collateral // 100
            plan = self.plan(candidate, spend)
            if plan is None:
                continue
            remaining -= plan.cost
            actions.append(
                self._action(
                    plan.instruction, plan.kind, LIQUIDATE, candidate.key, plan.expected_reward
                )
            )
        return actions

    # --- picking the instruction ---------------------------------------------------------------
    def plan(self, candidate: UserMargin, spend: int) -> _Plan | None:
        """The liquidation to send for ``candidate`` with ``spend`` (QUOTE_PRECISION) of
        budget, or ``None`` when nothing fits."""
        if spend <= 0:
            return None
        user = candidate.user
        me = (self._authority, self.params.sub_account_id)
        perp = self._largest_perp(user)
        if perp is not None:
            return self._plan_perp(me, user, perp, spend)
        deposit = self._largest_spot(user, SpotBalanceType.Deposit)
        borrow = self._largest_spot(user, SpotBalanceType.Borrow)
        if deposit is not None and borrow is not None:
            return self._plan_spot(me, user, deposit, borrow, spend)
        for position in user.perp_positions:
            if position.base_asset_amount != 0:
                continue
            if position.quote_asset_amount < 0 and deposit is not None:
                return self._plan_pnl_for_deposit(me, user, position, deposit, spend)
            if position.quote_asset_amount > 0 and borrow is not None:
                return self._plan_borrow_for_pnl(me, user, position, borrow, spend)
        return None

    def _oracle_price(self, oracle_id: str) -> int | None:
        data = self.margin.markets.oracles.get(oracle_id)
        return None if data is None or data.price <= 0 else data.price

    def _spot_price(self, market: SpotMarket) -> int | None:
        try:
            price = self.margin.markets.spot_price(market)
        except ProtocolError:
            return None
        return price if price > 0 else None

    def _largest_perp(self, user: User) -> PerpPosition | None:
        """The perp position with base (or BAL shares) of largest notional."""
        best: PerpPosition | None = None
        best_value = -1
        for position in user.perp_positions:
            if position.base_asset_amount == 0 and position.lp_shares == 0:
                continue
            market = self.margin.markets.perp_markets.get(position.market_index)
            price = None if market is None else self._oracle_price(market.amm.oracle)
            if price is None:
                continue
            value = calculate_base_asset_value_with_oracle_price(position.base_asset_amount, price)
            if value > best_value:
                best, best_value = position, value
        return best

    def _largest_spot(
        self, user: User, balance_type: SpotBalanceType
    ) -> tuple[SpotPosition, SpotMarket, int, int] | None:
        """(position, market, token amount, value) of the deposit or borrow of largest value."""
        best: tuple[SpotPosition, SpotMarket, int, int] | None = None
        for position in user.spot_positions:
            if position.balance_type != balance_type or position.scaled_balance == 0:
                continue
            market = self.margin.markets.spot_markets.get(position.market_index)
            price = None if market is None else self._spot_price(market)
            if market is None or price is None:
                continue
            tokens = abs(_signed_tokens(position, market))
            value = get_token_value(tokens, market.decimals, price)
            if tokens > 0 and (best is None or value > best[3]):
                best = (position, market, tokens, value)
        return best

    def _plan_perp(
        self, me: UserKey, user: User, position: PerpPosition, spend: int
    ) -> _Plan | None:
        market = self.margin.markets.perp_markets[position.market_index]
        price = self._oracle_price(market.amm.oracle)
        if price is None:
            return None
        step = market.amm.order_step_size
        # the notional the budget carries at the initial margin ratio
        notional = spend * MARGIN_PRECISION // max(market.margin_ratio_initial, 1)
        budget_base = standardize_base_asset_amount(
            notional * PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO // price, step
        )
        base = abs(position.base_asset_amount)
        if base == 0:
            max_base = step  # BAL shares only: the liquidation burns them
        else:
            max_base = min(base, budget_base)
        if max_base < step:
            return None
        slippage = self.params.limit_price_slippage_bps
        if position.base_asset_amount >= 0:  # the liquidator buys the user's long
            limit_price = _scale_bps(price, BPS + slippage)
        else:
            limit_price = _scale_bps(price, BPS - slippage)
        value = calculate_base_asset_value_with_oracle_price(max_base, price)
        authority, sub = user.key
        return _Plan(
            LiquidatePerp(me[0], me[1], authority, sub, market.market_index, max_base, limit_price),
            "liquidate_perp",
            cost=value * market.margin_ratio_initial // MARGIN_PRECISION,
            expected_reward=value * market.liquidator_fee // LIQUIDATION_FEE_PRECISION,
        )

    def _swap_limit(self, asset_price: int, liability_price: int) -> int:
        """The least asset per liability (PRICE_PRECISION) accepted: the oracles' ratio less
        the slippage (the program pays a premium on top of the ratio)."""
        fair = liability_price * PRICE_PRECISION // asset_price
        return _scale_bps(fair, BPS - self.params.limit_price_slippage_bps)

    def _plan_spot(
        self,
        me: UserKey,
        user: User,
        deposit: tuple[SpotPosition, SpotMarket, int, int],
        borrow: tuple[SpotPosition, SpotMarket, int, int],
        spend: int,
    ) -> _Plan | None:
        _, asset_market, _, _ = deposit
        _, liability_market, liability_tokens, _ = borrow
        asset_price = self._spot_price(asset_market)
        liability_price = self._spot_price(liability_market)
        if asset_price is None or liability_price is None:
            return None
        budget_tokens = spend * 10**liability_market.decimals // liability_price
        transfer = min(liability_tokens, budget_tokens)
        if transfer <= 0:
            return None
        authority, sub = user.key
        return _Plan(
            LiquidateSpot(
                me[0],
                me[1],
                authority,
                sub,
                asset_market.market_index,
                liability_market.market_index,
                transfer,
                self._swap_limit(asset_price, liability_price),
            ),
            "liquidate_spot",
            cost=get_token_value(transfer, liability_market.decimals, liability_price),
        )

    def _quote_price(self, market: PerpMarket) -> int | None:
        quote = self.margin.markets.spot_markets.get(market.quote_spot_market_index)
        return None if quote is None else self._spot_price(quote)

    def _plan_pnl_for_deposit(
        self,
        me: UserKey,
        user: User,
        position: PerpPosition,
        deposit: tuple[SpotPosition, SpotMarket, int, int],
        spend: int,
    ) -> _Plan | None:
        _, asset_market, _, _ = deposit
        market = self.margin.markets.perp_markets.get(position.market_index)
        asset_price = self._spot_price(asset_market)
        quote_price = None if market is None else self._quote_price(market)
        if asset_price is None or quote_price is None:
            return None
        transfer = min(-position.quote_asset_amount, spend)
        authority, sub = user.key
        return _Plan(
            LiquidatePerpPnlForDeposit(
                me[0],
                me[1],
                authority,
                sub,
                position.market_index,
                asset_market.market_index,
                transfer,
                self._swap_limit(asset_price, quote_price),
            ),
            "liquidate_perp_pnl_for_deposit",
            cost=transfer,
        )

    def _plan_borrow_for_pnl(
        self,
        me: UserKey,
        user: User,
        position: PerpPosition,
        borrow: tuple[SpotPosition, SpotMarket, int, int],
        spend: int,
    ) -> _Plan | None:
        _, liability_market, liability_tokens, _ = borrow
        market = self.margin.markets.perp_markets.get(position.market_index)
        liability_price = self._spot_price(liability_market)
        quote_price = None if market is None else self._quote_price(market)
        if liability_price is None or quote_price is None:
            return None
        budget = min(position.quote_asset_amount, spend)
        transfer = min(liability_tokens, budget * 10**liability_market.decimals // liability_price)
        if transfer <= 0:
            return None
        authority, sub = user.key
        return _Plan(
            LiquidateBorrowForPerpPnl(
                me[0],
                me[1],
                authority,
                sub,
                position.market_index,
                liability_market.market_index,
                transfer,
                self._swap_limit(quote_price, liability_price),
            ),
            "liquidate_borrow_for_perp_pnl",
            cost=get_token_value(transfer, liability_market.decimals, liability_price),
        )

    # --- derisking ----------------------------------------------------------------------------
    def _derisk(self, own: User) -> list[Action]:
        actions: list[Action] = []
        params = self.params
        for position in own.perp_positions:
            base = position.base_asset_amount
            if base == 0:
                continue
            market = self.margin.markets.perp_markets.get(position.market_index)
            price = None if market is None else self._oracle_price(market.amm.oracle)
            if market is None or price is None:
                continue
            step = market.amm.order_step_size
            allowed = standardize_base_asset_amount(
                params.max_position_value * PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO // price, step
            )
            # orders already on the book on the closing side count as sold
            covered = -position.open_asks if base > 0 else position.open_bids
            to_close = standardize_base_asset_amount(abs(base) - allowed - covered, step)
            if to_close < max(market.amm.min_order_size, step):
                continue
            direction = PositionDirection.Short if base > 0 else PositionDirection.Long
            if params.derisk_order_type == "limit":
                bps = (
                    BPS - params.derisk_slippage_bps
                    if base > 0
                    else BPS + params.derisk_slippage_bps
                )
                order = OrderParams(
                    order_type=OrderType.Limit,
                    market_type=MarketType.Perp,
                    direction=direction,
                    base_asset_amount=to_close,
                    market_index=market.market_index,
                    price=standardize_price(
                        _scale_bps(price, bps), market.amm.order_tick_size, direction
                    ),
                    reduce_only=True,
                )
            else:
                order = OrderParams(
                    order_type=OrderType.Market,
                    market_type=MarketType.Perp,
                    direction=direction,
                    base_asset_amount=to_close,
                    market_index=market.market_index,
                    reduce_only=True,
                )
            ix = PlacePerpOrder(own.authority, own.sub_account_id, order)
            actions.append(
                Action(
                    instructions=(ix,),
                    kind="derisk_perp",
                    dedupe_key=(DERISK, market.market_index),
                )
            )
        return actions

    # --- learning ----------------------------------------------------------------------------
    def on_outcome(self, outcome: Outcome) -> None:
        """A refused liquidation or resolution leaves its user alone until its account
        changes; a takeover refused for the liquidator's own collateral pauses liquidations
        until the liquidator's account changes."""
        if outcome.status is not Status.REJECTED:
            return
        key = outcome.action.dedupe_key
        if not (isinstance(key, tuple) and len(key) == 4 and key[0] in (LIQUIDATE, RESOLVE)):
            return
        if outcome.code == ErrorCode.InsufficientCollateral and outcome.field == "liquidator":
            self._blocked_on = self._own
            return
        if outcome.code in (ErrorCode.DuplicateTransaction, ErrorCode.StaleTransaction):
            # refusals of the transaction's envelope, not of the liquidation: the same
            # instruction signed at the same slot already ran (a tick that came before its
            # account change), or the slot it was signed at is no longer accepted (the clock
            # moved on): nothing was learned about the user, who is not throttled
            return
        self._throttled.add(key[1])

    @property
    def throttled(self) -> frozenset[UserKey]:
        return frozenset(self._throttled)
