"""HTTP API (FastAPI): event intake, jobs, decisions and approvals, audit."""
