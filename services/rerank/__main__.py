from lookalike.server import run_service
from services.rerank.server import build

run_service("rerank", build)
