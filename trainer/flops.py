"""Model FLOPs per token and the device peak that MFU divides by.

FLOPs per token of a training step (forward + backward) follow Kaplan et al. / PaLM:
6·N_matmul + 12·depth·width·seq_len, where N_matmul counts every weight used in a matmul
(blocks and readout; the embedding lookup is not a matmul) and the second term is attention's
QKᵀ and AV over a full (non-causal-discounted) context.

Peak: a table of dense bf16 tensor-core rates for known GPUs (looked up by device name); on a
CPU, a float32 GEMM rate measured about 1.5 s and then cached twice:
- on disk, in `<data.cache_dir>/gemm_rate.json`, one entry per CPU, keyed by host name,
  processor, torch version, torch's thread count and the core count, so every later process on
  the machine (each Ray worker, each `python -m trainer`) reads the number instead of measuring;
- in memory, one lookup per process and key (`functools.cache`), so trials that share a
  Ray worker process do not even read the file.
A run asks for its peak only when it first logs MFU, not when it is built. Delete the file to
measure again (after a hardware change the key changes by itself); a run that goes faster than
the stored peak (one measured while other work held the cores) measures it again. Torch is
imported only for the peak: counting FLOPs (which every sweep command does per trial) does not
need it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.config import ModelConfig

if TYPE_CHECKING:
    import torch

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}

CPU_RATE_FILE = "gemm_rate.json"
"""Measured CPU GEMM rates, one per machine key, under the data cache directory."""


def flops_per_token(cfg: ModelConfig, *, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·(matmul weights) + 12·depth·width·seq_len."""
    w = cfg.width
    per_block = 3 * w * w + w * w + 2 * cfg.mlp_ratio * w * w
    matmul_params = cfg.depth * per_block + w * vocab_size
    return 6.0 * matmul_params + 12.0 * cfg.depth * w * seq_len


def gpu_peak_flops(device: torch.device) -> float | None:
    """bf16 dense peak of a known GPU, else None."""
    import torch

    name = torch.cuda.get_device_name(device)
    for key, value in GPU_PEAK_BF16.items():
        if key in name:
            return value
    return None


def measure_cpu_gemm_rate(sizes: tuple[int, ...] = (512, 1024, 2048),
                          seconds: float = 0.5) -> float:
    """Best float32 GEMM FLOP/s of this CPU over a few square sizes, with torch's current
    thread count. One size under-measures: the kernels a model's shapes hit can be faster."""
    import torch

    best = 0.0
    for size in sizes:
        with torch.random.fork_rng(devices=[]):  # (measured mid-run: the run's RNG untouched)
            a, b = torch.randn(size, size), torch.randn(size, size)
        for _ in range(2):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
    return best


def cpu_peak_flops(cache_dir: str) -> float:
    """The measured CPU GEMM rate, cached per machine, torch version and thread count."""
    return _cached_cpu_rate(_cpu_key(), str(cache_dir))


def cpu_peak_at_least(cache_dir: str, achieved: float) -> float:
    """The CPU peak, once a run has done `achieved` FLOP/s: a stored peak below it was
    measured while other work held the cores (on a shared 2-core machine one was stored at
    30 GFLOP/s against 158 measured quiet, and every later run logged MFUs of 1.2-1.5), so it
    is measured again and stored as the higher of the two, never below `achieved`."""
    key, cache_dir = _cpu_key(), str(cache_dir)
    stored = _cached_cpu_rate(key, cache_dir)
    if achieved <= stored:
        return stored
    rate = max(stored, measure_cpu_gemm_rate(), achieved)
    _store_cpu_rate(key, cache_dir, rate)
    _cached_cpu_rate.cache_clear()
    return rate


def _cpu_key() -> str:
    import torch

    return f"v2|{platform.node()}|{platform.processor() or platform.machine()}|" \
           f"{torch.__version__}|{torch.get_num_threads()}|{os.cpu_count()}"


@cache
def _cached_cpu_rate(key: str, cache_dir: str) -> float:
    """The rate stored under `key` in the cache file; measured and stored when absent."""
    path = Path(cache_dir) / CPU_RATE_FILE
    table = json.loads(path.read_text()) if path.exists() else {}
    if key not in table:
        table[key] = measure_cpu_gemm_rate()
        _store_cpu_rate(key, cache_dir, table[key])
    return table[key]


def _store_cpu_rate(key: str, cache_dir: str, rate: float) -> None:
    path = Path(cache_dir) / CPU_RATE_FILE
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = rate
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)


def peak_flops(device: torch.device, cache_dir: str) -> float | None:
    """What MFU divides by on `device`."""
    if device.type == "cuda":
        return gpu_peak_flops(device)
    return cpu_peak_flops(cache_dir)
