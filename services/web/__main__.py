"""`python -m services.web`: the page and its JSON API on LOOKALIKE_WEB_ADDR (default 127.0.0.1:8080),
calling the gateway at LOOKALIKE_GATEWAY_ADDR."""

from services.web.server import main

main()
