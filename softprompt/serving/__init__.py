"""Multi-tenant serving, split like vLLM: the `store` (tenants, tasks, immutable versions, aliases; SQLite + files
or PostgreSQL, see store.py),
the `engine` (queue, dynamic batching, prompt table) and the `runner` (tensor prep + forward). The HTTP layer
lives in `softprompt.api`."""
