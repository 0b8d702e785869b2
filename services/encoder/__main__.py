from lookalike.server import run_service
from services.encoder.server import build

run_service("encoder", build)
