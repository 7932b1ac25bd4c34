"""Logging for a job on GitHub Actions: secrets masked, warnings and errors as annotations.

On a runner (``GITHUB_ACTIONS=true``) a secret is registered with ``::add-mask::`` before any
line could contain it, so Actions replaces it with ``***`` in the job log. Everywhere, the
`JobLog` itself also replaces every registered secret before it writes a line, so a token
never reaches a log even off Actions or when Actions' masking misses a derived form.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def escape_data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF escaped, or the runner cuts the message at
    the first line break (actions/toolkit, packages/core/src/command.ts, `escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property (`title=...`): also `:` and `,` (`escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


class JobLog:
    def __init__(self, stream: TextIO | None = None, *, on_actions: bool | None = None,
                 prefix: str = "runner") -> None:
        self._stream = stream
        self.on_actions = (os.environ.get("GITHUB_ACTIONS") == "true") if on_actions is None else on_actions
        self.prefix = prefix
        self._secrets: list[str] = []

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def mask(self, secret: str | None) -> None:
        """Never show `secret` from now on (short values are not secrets and would garble logs)."""
        if not secret or len(secret) < 6 or secret in self._secrets:
            return
        self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)
        if self.on_actions:
            # The mask command itself is consumed by the runner and never printed.
            self.stream.write(f"::add-mask::{secret}\n")
            self.stream.flush()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _write(self, line: str) -> None:
        self.stream.write(self.redact(line) + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._write(f"{time.strftime('%H:%M:%S')} [{self.prefix}] {message}")

    def _annotate(self, command: str, message: str) -> None:
        if self.on_actions:
            # Redacted before escaping, so a secret is found whatever characters surround it.
            self.stream.write(f"::{command} title={escape_property(self.prefix)}::"
                              f"{escape_data(self.redact(message))}\n")
            self.stream.flush()
        else:
            self._write(f"{time.strftime('%H:%M:%S')} [{self.prefix}] {command.upper()} {message}")

    def warning(self, message: str) -> None:
        self._annotate("warning", message)

    def error(self, message: str) -> None:
        self._annotate("error", message)
