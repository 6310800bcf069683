"""Entry point of ranks 1..W-1 that `trainer.run` starts: `python -m trainer.rank CONFIG.pkl`.

The environment carries RANK, WORLD_SIZE, MASTER_ADDR/PORT as under torchrun. An exception is
written, in one line, to the file rank 0 reads when it reports the failure.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path


def main() -> int:
    from trainer.distributed import ERROR_FILE_ENV
    from trainer.loop import run

    cfg = pickle.loads(Path(sys.argv[1]).read_bytes())
    try:
        run(cfg)
    except BaseException as error:  # noqa: BLE001 (reported to rank 0, then re-raised)
        traceback.print_exc()
        error_file = os.environ.get(ERROR_FILE_ENV)
        if error_file:  # (a ConfigError's every problem, one a line; else the first line)
            from trainer.errors import ConfigError

            text = f"{type(error).__name__}: {error}"
            Path(error_file).write_text(text if isinstance(error, ConfigError)
                                        else text.splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Straight out, without the interpreter's teardown: the process group is destroyed and
    # every file is written, but about one exit in ten aborted in a C++ destructor of the
    # collective backend ("terminate called without an active exception"), which rank 0 then
    # reported as this rank's failure.
    os._exit(code)
