"""CrewAI agent definitions and the scoped-tool factory — not built yet (issue 7); see README."""
