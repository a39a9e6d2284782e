"""Multi-tenant serving, split like vLLM: the registry `store` (tenants, tasks, immutable versions, aliases),
the `engine` (queue, dynamic batching, prompt table) and the `runner` (tensor prep + forward). The HTTP layer
lives in `softprompt.api`."""
