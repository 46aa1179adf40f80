"""What the LLM is asked: the instruction prompt (``detailed``: ``per_chunk`` questions per request,
for capable models) and the worked-example prompt (``simple``: one question per request, for
small local models), and the requests for one chunk. Bump :data:`PROMPT_VERSION` whenever a
prompt changes (cards record it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfr.data.schema import Document

if TYPE_CHECKING:  # annotation only: the spec checks prompt styles against this module
    from kfr.builders.questions.spec import QuestionSpec

PROMPT_VERSION = 1

PROMPT = """Read the text and write {k} multiple-choice questions about specific facts in it.

Rules:
- Each question must be answerable from the text alone, and must make sense without the text:
  name the person, place or thing it is about; never say "the text" or "the passage".
- Ask about specific details: names, numbers, dates, places, events.
- Give exactly four options. Exactly one is correct and stated in the text; the other three are
  wrong but plausible, of the same kind as the correct one.

Reply with JSON only, in this format:
{{"questions": [{{"question": "...?", "options": ["...", "...", "...", "..."], "answer": "A"}}]}}

Title: {title}
Text:
\"\"\"
{text}
\"\"\""""

# For small local models, which rarely follow the instructions above: one question per request,
# as the completion of a worked example (asked ``per_chunk`` times per chunk, different samples).
# A model that copies the example is caught by the checks (its answer is not in the chunk).
SIMPLE_PROMPT = """Text: "Mount Kenya is the highest mountain in Kenya. Its summit, Batian, is \
5,199 metres high."
Question as JSON: {{"question": "How high is Batian, the summit of Mount Kenya?", "options": \
["4,985 metres", "5,199 metres", "5,895 metres", "3,500 metres"], "answer": "B"}}

Text: "{text}"
Question as JSON:"""
PROMPT_STYLES = ("detailed", "simple")


def build_prompts(document: Document, spec: QuestionSpec) -> list[str]:
    """The requests for one chunk: one for ``per_chunk`` questions, or ``per_chunk`` for one."""
    text = document.text[: spec.max_chunk_chars].strip()
    if spec.prompt_style == "simple":
        return [SIMPLE_PROMPT.format(text=" ".join(text.split()))] * spec.per_chunk
    return [PROMPT.format(k=spec.per_chunk, title=document.title or document.id, text=text)]


__all__ = ["PROMPT", "PROMPT_STYLES", "PROMPT_VERSION", "SIMPLE_PROMPT", "build_prompts"]
