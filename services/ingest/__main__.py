from lookalike.server import run_service
from services.ingest.server import build

run_service("ingest", build)
