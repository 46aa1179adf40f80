"""Multiple-choice questions from any knowledge base, the paper's "current events" recipe.

Ovadia et al. had GPT-4 write four questions per Wikipedia chunk, kept the two most specific and
checked them by hand. Here, for every knowledge-base document (chunk):

1. an LLM (any :class:`~kfr.generation.backend.TextGenerator`: a local transformers model or an
   OpenAI-compatible endpoint) is asked for ``per_chunk`` four-option questions as JSON: in one
   request with instructions (``prompt_style="detailed"``, for capable models), or one question
   per request as the completion of a worked example (``"simple"``, for small local models)
   (:mod:`~kfr.builders.questions.prompts`);
2. every candidate is validated (:mod:`~kfr.builders.questions.validation`): a question, exactly
   four distinct non-empty options, one answer that names one of them, the answer supported by
   the chunk by a lexical check and not given away by the question itself; failures are counted
   by reason. A reply with no JSON or no valid question is asked again (``json_retries``, new
   seed), then the chunk is counted as failed: a long run never stops for a bad reply;
3. duplicates (same normalised question text anywhere in the set) are dropped;
4. questions whose words mostly do not come from their chunk (``support`` below
   ``min_support``) are dropped as not grounded: they are about something else (a small model
   copying the prompt's example, a question about the world at large); of the rest, the
   ``keep`` most *specific* are kept, if their specificity is above ``min_specificity``
   (:mod:`~kfr.builders.questions.specificity`);
5. options are shuffled with a generator seeded by the question id (LLMs favour putting the
   answer first), and the question is written with ``source_ids = [chunk id]``
   (steps 3-5: :mod:`~kfr.builders.questions.pipeline`);
6. optionally (``leakage_filter``), questions a base model answers correctly without any context
   are dropped (:mod:`~kfr.builders.questions.leakage`).

The questions, their card and the rejects file are written by
:mod:`~kfr.builders.questions.output`; the ``kfr-questions`` command is :mod:`kfr.cli.questions`.
"""

from kfr.builders.questions.leakage import drop_known_without_context, leakage_model
from kfr.builders.questions.output import TOOL, summary, write_question_set, write_rejects
from kfr.builders.questions.pipeline import GenerationResult, generate_questions
from kfr.builders.questions.prompts import PROMPT, PROMPT_STYLES, PROMPT_VERSION, SIMPLE_PROMPT
from kfr.builders.questions.spec import QuestionSpec
from kfr.builders.questions.specificity import SpecificityIndex
from kfr.builders.questions.validation import (
    REJECT_REASONS,
    Candidate,
    Rejected,
    answer_supported,
    validate_candidate,
)

__all__ = [
    "PROMPT",
    "PROMPT_STYLES",
    "PROMPT_VERSION",
    "REJECT_REASONS",
    "SIMPLE_PROMPT",
    "TOOL",
    "Candidate",
    "GenerationResult",
    "QuestionSpec",
    "Rejected",
    "SpecificityIndex",
    "answer_supported",
    "drop_known_without_context",
    "generate_questions",
    "leakage_model",
    "summary",
    "validate_candidate",
    "write_question_set",
    "write_rejects",
]
