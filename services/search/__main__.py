from lookalike.server import run_service
from services.search.server import build

run_service("search", build)
