"""The gateway's one error table: each domain exception and how a client sees it.

Code that already speaks HTTP (auth, the proxy, routes) raises `ApiError` with its own status;
everything below it raises these plain exceptions and this table answers them.
"""

from __future__ import annotations

from gateway.arena.votes import (AlreadyVoted, BattleNotFinished, BattleNotFound, BattleNotVoted, NotAContest,
                                 ShareNotFound, SideBusy, StoreError, TooManyRegenerations)
from shared.errors import ErrorSpec, ErrorTable, ModelNotFound

GATEWAY_ERRORS = ErrorTable({
    ModelNotFound: ErrorSpec(404, "model_not_found", param="model"),
    StoreError: ErrorSpec(400, StoreError.code),
    BattleNotFound: ErrorSpec(404, BattleNotFound.code),
    AlreadyVoted: ErrorSpec(409, AlreadyVoted.code),
    SideBusy: ErrorSpec(409, SideBusy.code),
    BattleNotFinished: ErrorSpec(409, BattleNotFinished.code),
    NotAContest: ErrorSpec(409, NotAContest.code),
    BattleNotVoted: ErrorSpec(409, BattleNotVoted.code),
    TooManyRegenerations: ErrorSpec(409, TooManyRegenerations.code),
    ShareNotFound: ErrorSpec(404, ShareNotFound.code),
})
