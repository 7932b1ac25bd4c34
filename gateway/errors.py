"""The gateway's one error table: each domain exception and how a client sees it.

Code that already speaks HTTP (auth, the proxy, routes) raises `ApiError` with its own status;
everything below it raises these plain exceptions and this table answers them.
"""

from __future__ import annotations

from gateway.arena.votes import (
                                             AlreadyVoted,
                                             BattleNotFinished,
                                             BattleNotFound,
                                             NotAContest,
                                             SideBusy,
                                             StoreError,
)
from gateway.instance_control.errors import (
                                             ControlNotConfigured,
                                             FleetRefused,
                                             GitHubFailed,
                                             InstanceNotFound,
                                             InvalidAction,
                                             OperationInProgress,
                                             RunNotFound,
                                             SupervisorUnavailable,
)
from shared.errors import ErrorSpec, ErrorTable, ModelNotFound

GATEWAY_ERRORS = ErrorTable({
    ModelNotFound: ErrorSpec(404, "model_not_found", param="model"),
    StoreError: ErrorSpec(400, StoreError.code),
    BattleNotFound: ErrorSpec(404, BattleNotFound.code),
    AlreadyVoted: ErrorSpec(409, AlreadyVoted.code),
    SideBusy: ErrorSpec(409, SideBusy.code),
    BattleNotFinished: ErrorSpec(409, BattleNotFinished.code),
    NotAContest: ErrorSpec(409, NotAContest.code),
    ControlNotConfigured: ErrorSpec(503, "fleet_control_not_configured"),
    SupervisorUnavailable: ErrorSpec(503, "supervisor_unavailable"),
    FleetRefused: ErrorSpec(409, "fleet_refused"),
    GitHubFailed: ErrorSpec(502, "github_failed"),
    RunNotFound: ErrorSpec(409, "run_not_found"),
    InstanceNotFound: ErrorSpec(404, "instance_not_found", param="instance_id"),
    OperationInProgress: ErrorSpec(409, "operation_in_progress"),
    InvalidAction: ErrorSpec(400, "invalid_value", param="action"),
})
