"""The OpenAPI 3.1 document of every route: aiohttp-pydantic's generated part, plus what it cannot know.

aiohttp-pydantic documents the views (PydanticViews) from their signatures and return annotations, with the
JSON Schema (2020-12) that pydantic writes, which OpenAPI 3.1 uses as it is. This module adds the few plain
handlers (login, metrics, the docs themselves) from pydantic models too, the security schemes, the
problem+json responses every operation can give, the Idempotency-Key header of the creates, deprecation of
the aliases, summaries and examples. Nothing here rewrites a schema into another dialect.
"""
