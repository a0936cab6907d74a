"""CrewAI tools: thin typed wrappers over engines and connectors, each with a declared scope."""
