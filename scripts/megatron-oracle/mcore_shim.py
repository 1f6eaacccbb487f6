"""Import megatron-core 0.16.1's dataset code without PyTorch.

megatron-core's `megatron/core/__init__.py` and `megatron/core/utils.py` pull in most of
PyTorch (parallel_state, dist_checkpointing, ...). The dataset modules we need
(`megatron.core.datasets.{indexed_dataset,gpt_dataset,blended_dataset,
blended_megatron_dataset_builder,blended_megatron_dataset_config}`) only use a handful of
torch calls, all of which map 1:1 onto numpy:

* `torch.utils.data.Dataset` (base class)                       -> `object`
* `torch.distributed.is_initialized/get_rank/barrier`           -> False / 0 / no-op
* `torch.cuda.device_count`                                     -> 0
* `torch.from_numpy`, `.long()`, `.contiguous()`, `.clone()`,
  `.numel()`, `.unsqueeze()`, `.numpy()`, `torch.tril/ones/arange/zeros_like/roll`,
  `torch.IntTensor(list)`                                       -> numpy (ndarray subclass)

The stub keeps torch's aliasing semantics where they matter (`from_numpy` shares memory,
`.long()` on an int64 tensor returns the same tensor, `.contiguous()` on a contiguous view
returns the view), so `GPTDataset.__getitem__` runs unmodified and returns numpy arrays with
the same values and dtypes (int64 tokens/labels/position_ids, float32 loss_mask, bool
attention_mask) that real torch would.

Usage (before any megatron import):

    import mcore_shim; mcore_shim.install()
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
"""
import importlib.util
import logging
import os
import sys
import types

import numpy as np


class Tensor(np.ndarray):
    """numpy-backed stand-in for torch.Tensor (only what megatron's dataset code touches)."""

    @property
    def device(self):
        return None

    def long(self):
        return self if self.dtype == np.int64 else self.astype(np.int64)

    def int(self):
        return self if self.dtype == np.int32 else self.astype(np.int32)

    def float(self):
        return self if self.dtype == np.float32 else self.astype(np.float32)

    def contiguous(self):
        return self if self.flags.c_contiguous else np.ascontiguousarray(self).view(Tensor)

    def clone(self):
        return self.copy()

    def numel(self):
        return int(self.size)

    def unsqueeze(self, dim):
        return np.expand_dims(self, dim)

    def numpy(self):
        return np.asarray(self)


def _t(a):
    return np.asarray(a).view(Tensor)


def _build_torch():
    torch = types.ModuleType("torch")
    torch.__version__ = "0.0.0+numpy-stub"
    torch.Tensor = Tensor
    torch.float = np.float32
    torch.float32 = np.float32
    torch.long = np.int64
    torch.int64 = np.int64
    torch.int32 = np.int32
    torch.bool = np.bool_

    def _dtype(dtype, default):
        return default if dtype is None else dtype

    torch.from_numpy = lambda a: np.asarray(a).view(Tensor)
    torch.IntTensor = lambda data: _t(np.array(data, dtype=np.int32))
    torch.LongTensor = lambda data: _t(np.array(data, dtype=np.int64))
    torch.tensor = lambda data, dtype=None, device=None: _t(np.array(data, dtype=dtype))
    torch.ones = lambda shape, dtype=None, device=None: _t(
        np.ones(shape, dtype=_dtype(dtype, np.float32))
    )
    torch.zeros = lambda shape, dtype=None, device=None: _t(
        np.zeros(shape, dtype=_dtype(dtype, np.float32))
    )
    torch.zeros_like = lambda a, dtype=None, device=None: _t(np.zeros_like(a, dtype=dtype))
    torch.arange = lambda *args, dtype=None, device=None: _t(
        np.arange(*args, dtype=_dtype(dtype, np.int64))
    )
    torch.tril = lambda a, diagonal=0: _t(np.tril(a, diagonal))
    torch.roll = lambda a, shifts, dims=None: _t(np.roll(a, shifts, axis=dims))

    utils = types.ModuleType("torch.utils")
    data = types.ModuleType("torch.utils.data")
    data.Dataset = object
    utils.data = data
    torch.utils = utils

    dist = types.ModuleType("torch.distributed")
    dist.is_initialized = lambda: False
    dist.is_available = lambda: False
    dist.get_rank = lambda group=None: 0
    dist.get_world_size = lambda group=None: 1
    dist.barrier = lambda group=None: None
    torch.distributed = dist

    cuda = types.ModuleType("torch.cuda")
    cuda.device_count = lambda: 0
    cuda.is_available = lambda: False
    torch.cuda = cuda

    return {
        "torch": torch,
        "torch.utils": utils,
        "torch.utils.data": data,
        "torch.distributed": dist,
        "torch.cuda": cuda,
    }


def megatron_core_dir():
    spec = importlib.util.find_spec("megatron")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("megatron-core is not installed (pip install --no-deps megatron-core==0.16.1)")
    return os.path.join(list(spec.submodule_search_locations)[0], "core")


def install():
    """Put the torch stub and light `megatron`, `megatron.core`, `megatron.core.utils`
    packages into sys.modules. Idempotent."""
    if getattr(sys.modules.get("torch"), "__version__", "") == "0.0.0+numpy-stub":
        return
    if "torch" in sys.modules:
        raise RuntimeError("real torch already imported; do not mix with the stub")
    sys.modules.update(_build_torch())

    core_dir = megatron_core_dir()
    megatron = types.ModuleType("megatron")
    megatron.__path__ = [os.path.dirname(core_dir)]
    core = types.ModuleType("megatron.core")
    core.__path__ = [core_dir]
    megatron.core = core
    sys.modules["megatron"] = megatron
    sys.modules["megatron.core"] = core

    # megatron.core.utils drags in all of torch; the dataset code only needs log_single_rank
    # (which lives, unchanged, in megatron.core._rank_utils).
    from megatron.core._rank_utils import log_single_rank, safe_get_rank  # noqa: E402

    mutils = types.ModuleType("megatron.core.utils")
    mutils.log_single_rank = log_single_rank
    mutils.safe_get_rank = safe_get_rank
    sys.modules["megatron.core.utils"] = mutils
    core.utils = mutils


def megatron_core_version():
    from importlib.metadata import version

    return version("megatron-core")


class OracleTokenizer:
    """The tokenizer object GPTDataset needs: eod, pad, unique_identifiers (vocab_size=None
    keeps token_dtype_code unset, as for any tokenizer without sequences_per_dataset)."""

    def __init__(self, eod, pad=-1, name="oracle"):
        self.eod = eod
        self.pad = pad
        self.vocab_size = None
        self.unique_identifiers = {"class": "OracleTokenizer", "name": name, "eod": eod, "pad": pad}


def quiet_logs(level=logging.ERROR):
    logging.getLogger("megatron").setLevel(level)
    logging.getLogger("megatron.core").setLevel(level)
