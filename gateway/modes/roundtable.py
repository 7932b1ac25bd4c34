"""Roundtable: everyone answers at once, then revises after reading the others, for N rounds.

Round 0 is the first answers; rounds 1..N are revisions, each round run in parallel. After each
round an `evaluation` event (kind `convergence`) gives the mean pairwise similarity of that
round's answers (`similarity.round_similarity`) and every pair's, for the page's chart. A
participant that fails a round is skipped in it; the others read its last answer, if any.
"""

from __future__ import annotations

from gateway.modes.session import Participant, Session
from gateway.modes.similarity import round_similarity


class Roundtable:
    async def run(self, session: Session) -> None:
        latest: dict[str, str] = {}
        by_id = {p.id: p for p in session.participants}
        for round_no in range(0, session.request.rounds + 1):
            previous = dict(latest)
            results = await session.parallel([
                session.turn(session.speaker(p), self._messages(session, p, previous, round_no),
                             role="answer" if round_no == 0 else "revision", round=round_no)
                for p in session.participants])
            answers = {p.id: text for p, text in zip(session.participants, results) if text is not None}
            latest.update(answers)
            mean, pairs = round_similarity(answers)
            await session.emit("evaluation", kind="convergence", round=round_no, similarity=mean, pairs=pairs,
                               answered=sorted(answers), measure="token-set Jaccard")
            if not latest:
                await session.emit("error", code="no_answers", message="No participant answered the question.")
                return
        final = {pid: latest[pid] for pid in by_id if pid in latest}
        await session.emit("evaluation", kind="final", answers=final)

    def _messages(self, session: Session, participant: Participant, previous: dict[str, str],
                  round_no: int) -> list[dict[str, str]]:
        question = session.clip(session.question, 2000)
        if round_no == 0 or not previous:
            return [{"role": "system", "content": "Answer the question briefly and accurately."},
                    {"role": "user", "content": question}]
        budget = max(300, session.limits.transcript_chars // max(1, len(previous)))
        others = "\n\n".join(f"Another answer: {session.clip(text.strip(), budget)}"
                             for pid, text in previous.items() if pid != participant.id)
        own = previous.get(participant.id)
        mine = f"Your previous answer: {session.clip(own.strip(), budget)}\n\n" if own else ""
        return [{"role": "system", "content": "You are at a roundtable of AI models. Read the other answers, "
                                              "then give your revised answer: keep what is right, fix what is wrong. "
                                              "Be brief."},
                {"role": "user", "content": f"{question}\n\n{mine}{others}\n\nYour revised answer:"}]
