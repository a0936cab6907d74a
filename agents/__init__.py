"""CrewAI agent definitions (``agents.yaml``), their settings and bounds, and the rules an agent's
proposal must pass. Nothing here imports CrewAI; ``crews.agent_runtime`` builds the agents."""
