"""Customer-service chat: intents, facts from the three systems, templated answers, gated actions.

Deterministic by design: rule-based intent and entity extraction, answers composed from
templates over the records read, every claim cited. An LLM layer may rephrase, but it must
pass :func:`chat.answers.check_answer` against the same facts or fall back to the template.
"""
