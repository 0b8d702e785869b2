from lookalike.server import run_service
from services.gateway.server import build

run_service("gateway", build)
