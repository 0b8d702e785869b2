"""The web page: a small ASGI app (Starlette on uvicorn) that serves a static page and a JSON API
which calls the gateway over gRPC — the same public API as the CLI, no second path to the services."""
