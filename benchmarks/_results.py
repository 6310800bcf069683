"""Where benchmark scripts put their JSON: benchmarks/results/NAME.json (git-ignored)."""

import json
from pathlib import Path


def save(name: str, result: dict) -> Path:
    """Write `result` as results/NAME.json beside the scripts; the path written."""
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    return path
