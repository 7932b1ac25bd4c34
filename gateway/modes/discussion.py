"""Discussion: an orchestrator weighs the participants, they speak in turns, it judges, one synthesis.

1. The orchestrator reads the question and the participants' profiles (from the catalogue) and
   returns, as schema-constrained JSON, the domains the question touches and an expertise
   score per participant; unreadable output means equal weights (`evaluation`, kind `plan`).
2. Each round, participants speak one after another, most expert first, each seeing the
   discussion so far (its most recent part, to fit small contexts).
3. After each round the orchestrator judges whether the question is fully answered
   (`evaluation`, kind `judgement`); if so, no further round starts.
4. The orchestrator writes one answer that weighs the contributions (`synthesis`).
"""

from __future__ import annotations

from typing import Mapping

from gateway.modes.session import Participant, Session
from gateway.modes.structured import (JUDGEMENT_SCHEMA, Plan, equal_plan, parse_judgement, parse_plan, plan_schema,
                                      response_format)
from shared.catalogue import ModelProfile


def describe(participant: Participant, profile: ModelProfile | None) -> str:
    line = f"{participant.id}: {participant.name}"
    if profile is None:
        return line
    parts = [profile.description] if profile.description else []
    if profile.strengths:
        parts.append("Strong at: " + ", ".join(profile.strengths))
    if profile.weaknesses:
        parts.append("Weak at: " + ", ".join(profile.weaknesses))
    return line + (" - " + " ".join(p.rstrip(".") + "." for p in parts) if parts else "")


class Discussion:
    def __init__(self, profiles: Mapping[str, ModelProfile]) -> None:
        self.profiles = profiles

    async def run(self, session: Session) -> None:
        ids = [p.id for p in session.participants]
        plan = await self._plan(session)
        await session.emit("evaluation", kind="plan", domains=plan.domains, weights=plan.weights, source=plan.source,
                           note=plan.note, order=plan.order(ids))
        by_id = {p.id: p for p in session.participants}
        spoken: list[tuple[Participant, str]] = []
        rounds = session.request.rounds
        for round_no in range(1, rounds + 1):
            for pid in plan.order(ids):
                participant = by_id[pid]
                text = await session.turn(session.speaker(participant), self._messages(session, participant, spoken),
                                          role="contribution", round=round_no)
                if text is not None:
                    spoken.append((participant, text))
            if round_no < rounds:
                judgement = await self._judge(session, spoken, round_no)
                if judgement is not None and judgement.complete:
                    await session.emit("evaluation", kind="early_stop", round=round_no,
                                       note=f"stopped after round {round_no} of {rounds}: the answer is complete")
                    break
        await self._synthesis(session, spoken, plan)

    async def _plan(self, session: Session) -> Plan:
        ids = [p.id for p in session.participants]
        if session.orchestrator is None:
            return equal_plan(ids, "no orchestrator; equal weights")
        roster = "\n".join(describe(p, self.profiles.get(p.model)) for p in session.participants)
        messages = [
            {"role": "system", "content": "You plan a discussion between AI models. Reply with JSON only."},
            {"role": "user", "content": (
                f"Question: {session.clip(session.question, 1500)}\n\nParticipants:\n{roster}\n\n"
                "Name one to three domains the question touches, and rate each participant's expertise for it "
                "from 0 to 10, as JSON: {\"domains\": [...], \"expertise\": {"
                + ", ".join(f'"{i}": n' for i in ids) + "}}")},
        ]
        text = await session.turn(session.orchestrator, messages, role="plan", round=0,
                                  max_tokens=session.limits.orchestrator_max_tokens,
                                  response_format=response_format("discussion_plan", plan_schema(ids)),
                                  stream_tokens=False)
        if text is None:
            return equal_plan(ids, "the orchestrator did not answer; equal weights")
        return parse_plan(text, ids)

    def _so_far(self, session: Session, spoken: list[tuple[Participant, str]]) -> str:
        text = "\n\n".join(f"{p.name}: {t.strip()}" for p, t in spoken)
        limit = session.limits.transcript_chars
        return text if len(text) <= limit else "… " + text[-limit:]

    def _messages(self, session: Session, participant: Participant,
                  spoken: list[tuple[Participant, str]]) -> list[dict[str, str]]:
        system = (f"You are {participant.name}, one of several AI models answering a question together. "
                  "Be brief: add what is missing or correct what is wrong; do not repeat the others.")
        if not spoken:
            user = f"{session.clip(session.question, 2000)}\n\nYou speak first. Answer briefly."
        else:
            user = (f"{session.clip(session.question, 2000)}\n\nThe discussion so far:\n{self._so_far(session, spoken)}"
                    "\n\nYour contribution:")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def _judge(self, session: Session, spoken: list[tuple[Participant, str]], round_no: int):
        if session.orchestrator is None or not spoken:
            return None
        messages = [
            {"role": "system", "content": "You judge whether a discussion has fully answered a question. "
                                          "Reply with JSON only."},
            {"role": "user", "content": (
                f"Question: {session.clip(session.question, 1500)}\n\nDiscussion:\n{self._so_far(session, spoken)}\n\n"
                "Is the question completely and correctly answered? "
                "JSON: {\"complete\": true or false, \"reason\": \"one short sentence\"}")},
        ]
        text = await session.turn(session.orchestrator, messages, role="judge", round=round_no,
                                  max_tokens=session.limits.orchestrator_max_tokens,
                                  response_format=response_format("judgement", JUDGEMENT_SCHEMA), stream_tokens=False)
        judgement = parse_judgement(text or "")
        await session.emit("evaluation", kind="judgement", round=round_no, complete=judgement.complete,
                           reason=judgement.reason, source=judgement.source)
        return judgement

    async def _synthesis(self, session: Session, spoken: list[tuple[Participant, str]], plan: Plan) -> None:
        if not spoken:
            await session.emit("error", code="no_contributions",
                               message="No participant answered, so there is nothing to synthesise.")
            return
        writer = session.orchestrator or session.speaker(max(session.participants,
                                                            key=lambda p: plan.weights.get(p.id, 0.0)))
        weights = "\n".join(f"{p.name}: {round(100 * plan.weights.get(p.id, 0.0))}%" for p in session.participants)
        messages = [
            {"role": "system", "content": "You write the final answer to a question from a discussion between "
                                          "AI models. Give more weight to the more expert participants."},
            {"role": "user", "content": (
                f"{session.clip(session.question, 1500)}\n\nExpertise weights:\n{weights}\n\n"
                f"The discussion:\n{self._so_far(session, spoken)}\n\nWrite one clear final answer.")},
        ]
        text = await session.turn(writer, messages, role="synthesis", round=0)
        if text is not None:
            await session.emit("synthesis", participant=writer.id, name=writer.name, text=text)
