"""The HTTP layer of `softprompt serve`: authentication, tenant -> prompt handle, OpenAI-compatible endpoints.

It holds no model code: requests become engine jobs carrying immutable prompt handles.
"""
