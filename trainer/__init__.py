"""One training run of a proxy model: `trainer.run(cfg, reporter)` or `python -m trainer`;
`trainer.TrainingRun` for driving a run step by step; `trainer.run_group(cfgs)` for trials
that train together as one fused group (`trainer.fused`).

Knows nothing of sweeps or Ray. Names are imported lazily so that `import trainer.config`
does not pull in torch; `compose` is not (it imports Hydra, not torch): a name that is also a
submodule's would be that submodule after its first import, and `from trainer import compose`
would give the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainer.compose import compose

if TYPE_CHECKING:
    from trainer.config import Config
    from trainer.errors import ConfigError
    from trainer.fused import run_group
    from trainer.identity import config_id
    from trainer.loop import RunResult, TrainingRun, run
    from trainer.validation import check, problems

_EXPORTS = {
    "run": "trainer.loop", "RunResult": "trainer.loop", "TrainingRun": "trainer.loop",
    "Config": "trainer.config",
    "ConfigError": "trainer.errors",
    "config_id": "trainer.identity", "check": "trainer.validation",
    "problems": "trainer.validation", "run_group": "trainer.fused",
}

__all__ = ["Config", "ConfigError", "RunResult", "TrainingRun", "check", "compose", "config_id",
           "problems", "run", "run_group"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
