"""Qdrant knowledge base of SOPs and history — not built yet (issue 7); see README."""
