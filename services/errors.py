"""The model service's one error table: each domain exception and how a client sees it."""

from __future__ import annotations

from shared.errors import ErrorSpec, ErrorTable
from services.exceptions import (ContextTooLong, Draining, GenerationCancelled, GenerationFailed, InferenceFailed,
                                 InvalidMessages, InvalidParameter, ModelLoadFailed, ModelLoading, ModelNotFound,
                                 QueueFull, SchemaTooLarge, ServiceStopping, UnsupportedContent, UnsupportedParameter)

SERVICE_ERRORS = ErrorTable({
    ModelNotFound: ErrorSpec(404, "model_not_found", param="model"),
    InvalidParameter: ErrorSpec(400, "invalid_value"),
    UnsupportedParameter: ErrorSpec(400, "unsupported_parameter"),
    SchemaTooLarge: ErrorSpec(400, "schema_too_large"),
    ContextTooLong: ErrorSpec(400, "context_length_exceeded", param="messages"),
    UnsupportedContent: ErrorSpec(400, "unsupported_content", param="messages"),
    InvalidMessages: ErrorSpec(400, "invalid_messages", param="messages"),
    ModelLoading: ErrorSpec(503, "model_loading"),
    ModelLoadFailed: ErrorSpec(503, "model_load_failed"),
    QueueFull: ErrorSpec(503, "queue_full"),
    Draining: ErrorSpec(503, "draining"),
    ServiceStopping: ErrorSpec(503, "service_stopping"),
    GenerationCancelled: ErrorSpec(503, "cancelled"),
    InferenceFailed: ErrorSpec(500, "inference_error"),
    GenerationFailed: ErrorSpec(500, "internal_error"),
})
