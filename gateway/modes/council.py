"""Council: everyone answers at once, everyone ranks the others blind, a chairman writes the answer.

1. Every participant answers in parallel.
2. Every participant that answered ranks the others' answers, in parallel. It sees them as
   "Response A", "Response B", ..., with the letters shuffled for each ranker and every known
   model name replaced, so it cannot tell whose answer is whose. Rankings are read from JSON
   (schema-constrained) or, failing that, from the text (`structured.parse_ranking`); each
   ranking is a `ranking` event, then their aggregate (mean rank, rankers, first places).
3. The chairman (a participant named in the request, the orchestrator, or by default the
   best-ranked participant) writes the final answer with the answers and rankings in view.
"""

from __future__ import annotations

import random
from typing import Iterable

from gateway.arena.battles import NameScrubber
from gateway.modes.session import Participant, Session, Speaker
from gateway.modes.structured import aggregate, letters, parse_ranking, ranking_schema, response_format


class Council:
    def __init__(self, known_names: Iterable[str], rng: random.Random | None = None) -> None:
        self.known_names = set(known_names)
        self.rng = rng or random.SystemRandom()

    async def run(self, session: Session) -> None:
        participants = session.participants
        results = await session.parallel([
            session.turn(session.speaker(p), [{"role": "system", "content": "Answer the question briefly and accurately."},
                                              {"role": "user", "content": session.clip(session.question, 2000)}],
                         role="answer", round=1)
            for p in participants])
        answers = {p.id: text for p, text in zip(participants, results) if text is not None}
        if not answers:
            await session.emit("error", code="no_answers", message="No participant answered the question.")
            return
        scrub = NameScrubber({*self.known_names, *(p.model for p in participants), *(p.name for p in participants)})
        rankers = [p for p in participants if p.id in answers]
        orders = await session.parallel([self._rank(session, ranker, answers, scrub) for ranker in rankers])
        rankings = {r.id: order for r, order in zip(rankers, orders) if order}
        standings = aggregate(rankings, [p.id for p in participants if p.id in answers])
        names = {p.id: p.name for p in participants}
        table = [{"participant": s.participant, "name": names[s.participant], "mean_rank": s.mean_rank,
                  "rankers": s.rankers, "first_places": s.first_places, "ranks": s.ranks} for s in standings]
        await session.emit("ranking", kind="aggregate", table=table, rankers=len(rankings))
        await self._chair(session, answers, table)

    async def _rank(self, session: Session, ranker: Participant, answers: dict[str, str],
                    scrub: NameScrubber) -> list[str]:
        others = [pid for pid in answers if pid != ranker.id]
        if len(others) < 2:
            # One other answer: there is nothing to order, and no model time to spend on it.
            await session.emit("ranking", kind="ranker", ranker=ranker.id, order=others, source="single",
                               letters={})
            return others
        shuffled = others[:]
        self.rng.shuffle(shuffled)
        labels = letters(len(shuffled))
        by_letter = dict(zip(labels, shuffled))
        budget = max(300, session.limits.transcript_chars // len(shuffled))
        body = "\n\n".join(f"Response {letter}:\n{session.clip(scrub(answers[pid], 'a model'), budget)}"
                           for letter, pid in by_letter.items())
        messages = [
            {"role": "system", "content": "You rank answers to a question from best to worst. Reply with JSON only."},
            {"role": "user", "content": (
                f"Question: {session.clip(session.question, 1500)}\n\n{body}\n\n"
                f"Rank the responses from best to worst as JSON: {{\"ranking\": [{', '.join(repr(x) for x in labels)}]}}"
                .replace("'", '"'))},
        ]
        text = await session.turn(session.speaker(ranker), messages, role="ranking", round=2,
                                  max_tokens=session.limits.orchestrator_max_tokens,
                                  response_format=response_format("ranking", ranking_schema(labels)),
                                  stream_tokens=False)
        parsed = parse_ranking(text or "", labels)
        order = [by_letter[letter] for letter in parsed.order]
        await session.emit("ranking", kind="ranker", ranker=ranker.id, order=order, source=parsed.source,
                           letters=by_letter)
        return order

    def _chairman(self, session: Session, table: list[dict]) -> Speaker:
        choice = session.request.chairman
        if choice == "orchestrator" and session.orchestrator is not None:
            return session.orchestrator
        by_id = {p.id: p for p in session.participants}
        if choice in by_id:
            return session.speaker(by_id[choice])
        return session.speaker(by_id[table[0]["participant"]])

    async def _chair(self, session: Session, answers: dict[str, str], table: list[dict]) -> None:
        chair = self._chairman(session, table)
        budget = max(300, session.limits.transcript_chars // len(answers))
        by_id = {p.id: p for p in session.participants}
        listing = "\n\n".join(
            f"{row['name']} (mean rank {row['mean_rank'] if row['mean_rank'] is not None else 'n/a'}):\n"
            f"{session.clip(answers[row['participant']].strip(), budget)}" for row in table)
        messages = [
            {"role": "system", "content": "You chair a council of AI models. Write the final answer to the question, "
                                          "drawing mostly on the best-ranked answers."},
            {"role": "user", "content": f"{session.clip(session.question, 1500)}\n\nThe council's answers, best "
                                        f"ranked first:\n{listing}\n\nFinal answer:"},
        ]
        text = await session.turn(chair, messages, role="synthesis", round=3)
        if text is not None:
            await session.emit("synthesis", participant=chair.id, name=chair.name, text=text,
                               chairman="chosen" if session.request.chairman in {*by_id, "orchestrator"} else "best")
