"""The gateway's one error table: each domain exception and how a client sees it.

Code that already speaks HTTP (auth, the proxy, routes) raises `ApiError` with its own status;
everything below it raises these plain exceptions and this table answers them.
"""

from __future__ import annotations

from gateway.arena.votes import (AlreadyVoted, BattleNotFinished, BattleNotFound, BattleNotVoted, NotAContest,
                                 ShareNotFound, SideBusy, StoreError, TooManyRegenerations)
from gateway.admin import catalogue_overlay as overlay
from gateway.admin import hub_downloads as hub
from gateway.instance_control import errors as control
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
    # The admin side's models: the runtime catalogue overlay and hub downloads.
    overlay.InvalidSetting: ErrorSpec(400, overlay.InvalidSetting.code),
    overlay.UnknownModel: ErrorSpec(404, overlay.UnknownModel.code, param="model"),
    overlay.ModelExists: ErrorSpec(409, overlay.ModelExists.code, param="key"),
    overlay.NotARuntimeModel: ErrorSpec(409, overlay.NotARuntimeModel.code, param="model"),
    hub.InvalidHubRequest: ErrorSpec(400, hub.InvalidHubRequest.code),
    hub.RepositoryNotFound: ErrorSpec(404, hub.RepositoryNotFound.code, param="repo"),
    hub.RevisionNotFound: ErrorSpec(404, hub.RevisionNotFound.code, param="repo"),
    hub.RepositoryGated: ErrorSpec(403, hub.RepositoryGated.code, param="repo"),
    hub.QuantisationNotFound: ErrorSpec(404, hub.QuantisationNotFound.code, param="quant"),
    hub.QuantisationAmbiguous: ErrorSpec(400, hub.QuantisationAmbiguous.code, param="quant"),
    hub.SplitIncomplete: ErrorSpec(422, hub.SplitIncomplete.code, param="quant"),
    hub.DownloadTooLarge: ErrorSpec(413, hub.DownloadTooLarge.code, param="quant"),
    hub.DownloadInProgress: ErrorSpec(409, hub.DownloadInProgress.code, param="model"),
    hub.TooManyDownloads: ErrorSpec(429, hub.TooManyDownloads.code),
    hub.DownloadNotFound: ErrorSpec(404, hub.DownloadNotFound.code, param="id"),
    hub.HubBusy: ErrorSpec(503, hub.HubBusy.code, param="repo"),
    hub.HubUnavailable: ErrorSpec(502, hub.HubUnavailable.code),
    hub.HubError: ErrorSpec(502, hub.HubError.code),
    # Starting and stopping instances at runtime.
    control.ControlNotConfigured: ErrorSpec(503, "fleet_control_not_configured"),
    control.SupervisorUnavailable: ErrorSpec(503, "supervisor_unavailable"),
    control.SupervisorBadAnswer: ErrorSpec(502, "bad_supervisor_answer"),
    control.ModelHasInstances: ErrorSpec(409, "model_has_instances", param="model"),
    control.FleetRefused: ErrorSpec(409, "fleet_refused"),
    control.GitHubRateLimited: ErrorSpec(503, "github_rate_limited"),
    control.GitHubFailed: ErrorSpec(502, "github_failed"),
    control.RunNotFound: ErrorSpec(409, "run_not_found"),
    control.InstanceNotFound: ErrorSpec(404, "instance_not_found", param="instance_id"),
    control.OperationInProgress: ErrorSpec(409, "operation_in_progress"),
    control.InvalidAction: ErrorSpec(400, "invalid_value", param="action"),
    control.OverlayTooLarge: ErrorSpec(413, "overlay_too_large"),
    control.PublishConflict: ErrorSpec(409, "publish_conflict"),
})
