"""Pure decision engines: deterministic, no I/O, no LLM."""
