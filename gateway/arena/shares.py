"""Read-only share links: a voted battle, revealed, or a snapshot of a compare conversation.

A link is `/share/<id>`, the id random (128 bits) and kept in the store, so the URL holds no
prompt text and cannot be guessed. A battle is shared only after its vote (before, the link
would reveal the pair to anyone the voter sends it to); a shared battle shows the models, the
answers and the vote, never who voted. A compare conversation is not kept by the gateway (the
page talks to `/v1/chat/completions`), so its share is the snapshot the page sends, bounded like
a battle's conversation and naming only catalogue models.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.arena.votes import Battle, BattleNotVoted, VoteStore
from shared.catalogue import Catalogue
from shared.errors import ApiError


class ShareMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class ComparePanel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ShareMessage] = Field(min_length=1, max_length=100)


class CompareShareRequest(BaseModel):
    """What the compare page sends to share its conversation."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field("", max_length=8_000)
    panels: list[ComparePanel] = Field(min_length=1, max_length=8)


def share_url(share_id: str) -> str:
    return f"/share/{share_id}"


class ShareBook:
    """Creates and reads shares in the arena's store."""

    def __init__(self, store: VoteStore, catalogue: Callable[[], Catalogue]) -> None:
        """`catalogue`: the current catalogue (the admin's runtime overlay replaces it)."""
        self.store = store
        self._catalogue = catalogue

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue()

    async def share_battle(self, battle: Battle, *, client: str | None = None) -> dict[str, Any]:
        if battle.vote is None:
            raise BattleNotVoted("Vote on this battle first: a link to an unvoted battle would reveal the pair "
                                 "to whoever opens it.")
        share_id = await self.store.share(secrets.token_urlsafe(16), "battle", battle_id=battle.id, client=client)
        return {"object": "arena.share", "id": share_id, "kind": "battle", "url": share_url(share_id)}

    async def share_compare(self, request: CompareShareRequest, *, client: str | None = None) -> dict[str, Any]:
        policy = self.catalogue.arena
        if len(request.system) > policy.max_system_chars:
            raise ApiError(400, f"The system prompt has {len(request.system)} characters; a share takes at most "
                                f"{policy.max_system_chars}.", code="prompt_too_long", param="system")
        seen = set()
        for i, panel in enumerate(request.panels):
            if panel.model not in self.catalogue.models:
                raise ApiError(400, f"The catalogue has no model {panel.model!r}.", code="model_not_found",
                               param=f"panels.{i}.model")
            if panel.model in seen:
                raise ApiError(400, f"The model {panel.model!r} is shared twice.", code="duplicate_model",
                               param=f"panels.{i}.model")
            seen.add(panel.model)
            chars = sum(len(m.content) for m in panel.messages)
            if chars > policy.max_conversation_chars:
                raise ApiError(400, f"The conversation with {panel.model!r} has {chars} characters; a share takes "
                                    f"at most {policy.max_conversation_chars}.", code="conversation_too_long",
                               param=f"panels.{i}.messages")
        share_id = await self.store.share(secrets.token_urlsafe(16), "compare", body=request.model_dump(),
                                          client=client)
        return {"object": "arena.share", "id": share_id, "kind": "compare", "url": share_url(share_id)}

    async def get(self, share_id: str) -> dict[str, Any]:
        share = await self.store.get_share(share_id)
        out: dict[str, Any] = {"object": "arena.share", "id": share["id"], "kind": share["kind"],
                               "created": int(share["created_at"])}
        if share["kind"] == "battle":
            out["battle_id"] = share["battle_id"]
        else:
            body = share["body"]
            names = {k: m.display_name for k, m in self.catalogue.models.items()}
            out["compare"] = {"system": body.get("system", ""),
                              "panels": [{**p, "display_name": names.get(p["model"], p["model"])}
                                         for p in body.get("panels", [])]}
        return out
