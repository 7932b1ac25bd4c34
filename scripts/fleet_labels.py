"""The labels that name one link of a restart chain, and the run title that carries them.

A workflow run is titled ``arena-fleet model=<key> instance=<n> id=<instance id>`` (the
dispatcher's `run-name`). Runs are found by parsing that title and comparing each label
exactly: `smollm2-135m` never matches `smollm2-135m-q8`, and instance 1 never matches 10.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

TITLE_PREFIX = "arena-fleet"
GATEWAY_LABEL = "gateway"
ALL_INSTANCES = "all"
_LABEL = re.compile(r"(\w+)=(\S*)")


@dataclass(frozen=True)
class RunLabels:
    model: str          # a catalogue key, or "gateway"
    instance: str       # "1".."3", or "all" for a fleet-up run that starts the whole matrix
    instance_id: str = ""

    def title(self) -> str:
        return f"{TITLE_PREFIX} model={self.model} instance={self.instance} id={self.instance_id or '-'}"

    def covers(self, model: str, instance: str | None) -> bool:
        """Exactly this model, and this instance label (a fleet-up run, "all", covers each)."""
        if self.model != model:
            return False
        return instance is None or self.instance in (instance, ALL_INSTANCES)


def parse_title(title: str | None) -> RunLabels | None:
    """The labels of a run title, or None when the run is not one of ours."""
    if not title or not title.startswith(TITLE_PREFIX + " "):
        return None
    labels = dict(_LABEL.findall(title[len(TITLE_PREFIX):]))
    if "model" not in labels or "instance" not in labels:
        return None
    instance_id = labels.get("id", "")
    return RunLabels(labels["model"], labels["instance"], "" if instance_id == "-" else instance_id)


def new_instance_id(model: str, instance: str) -> str:
    """A fresh id for one instance's registration: readable, and unique per run."""
    return f"{model}.{instance}.{secrets.token_hex(4)}"
