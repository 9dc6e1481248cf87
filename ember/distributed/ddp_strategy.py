"""DDPStrategy: the Strategy seam implemented over MPI (one process per rank, same device).

Every reduction of the trainer goes through ``reduce``, which packs a whole dict of metrics
(or an array) into one float64 vector: one allreduce per call, however many metrics.
``process_dataloader`` re-creates a DataLoader with a ``DistributedSampler`` (padded, for
training) or an ``UnpaddedDistributedSampler`` (evaluation: every sample exactly once, so
count-weighted reductions give the single-process metrics). ``setup_module`` wraps the model in
DistributedDataParallel (optionally converting BatchNorm to SyncBatchNorm first).
``strategy_for`` picks "ddp" automatically when the process was started by an MPI launcher
with more than one rank.
"""

from __future__ import annotations

import contextlib
import pathlib
import warnings

import numpy as np

from ember.distributed.strategy import SingleDeviceStrategy, Strategy

__all__ = ["DDPStrategy", "strategy_for"]

_DL_ARGS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
)


class DDPStrategy(Strategy):
    """Data parallelism over MPI ranks: DDP model, sharded data, collective reductions.

    ``comm``: an Ember communicator (default ``world()``); ``timeout``: the collective
    watchdog's seconds; ``sync_batchnorm``: convert BatchNorm layers in ``setup_module``;
    the remaining keywords go to DistributedDataParallel.
    """

    strategy_name = "ddp"

    def __init__(
        self,
        device="cpu",
        comm=None,
        timeout: float | None = None,
        sync_batchnorm: bool = False,
        bucket_cap_mb: float = 25,
        first_bucket_mb: float = 1,
        compression=None,
        broadcast_buffers: bool = True,
    ) -> None:
        super().__init__(device)
        if comm is None:
            from ember.distributed.comm import world

            comm = world(timeout)
        self.comm = comm
        if self.root_device.type == "cuda" and comm.size > 1:  # one GPU per rank, by local rank
            from ember.distributed.nccl import device_for_local_rank

            self.root_device = device_for_local_rank(comm.local_rank)
        self.sync_batchnorm = sync_batchnorm
        self.ddp_kwargs = {
            "bucket_cap_mb": bucket_cap_mb,
            "first_bucket_mb": first_bucket_mb,
            "compression": compression,
            "broadcast_buffers": broadcast_buffers,
        }
        self.model = None  # the DistributedDataParallel wrapper, after setup_module
        if comm.size > 1:
            from ember.distributed.failure import install_excepthook

            install_excepthook(comm)

    # ---- who am I
    @property
    def global_rank(self) -> int:
        return self.comm.rank

    @property
    def local_rank(self) -> int:
        return self.comm.local_rank

    @property
    def world_size(self) -> int:
        return self.comm.size

    # ---- collectives
    def barrier(self, name: str | None = None) -> None:
        self.comm.barrier()

    def broadcast(self, obj, src: int = 0):
        """Rank ``src``'s value: NumPy arrays and Tensors (any shape and dtype), paths, and
        JSON-able values (tuples come back as lists)."""
        from ember.tensor.tensor import Tensor

        comm = self.comm
        if comm.size == 1:
            return obj
        kind = None
        if comm.rank == src:
            kind = (
                "tensor"
                if isinstance(obj, Tensor)
                else "array"
                if isinstance(obj, np.ndarray)
                else "path"
                if isinstance(obj, pathlib.PurePath)
                else "json"
            )
        kind = comm.broadcast_object(kind, src)
        if kind == "json":
            return comm.broadcast_object(obj, src)
        if kind == "path":
            return pathlib.Path(comm.broadcast_object(str(obj) if comm.rank == src else None, src))
        arr = None
        if comm.rank == src:
            arr = obj.data if kind == "tensor" else obj
            if not isinstance(arr, np.ndarray):
                arr = arr.get()
        meta = comm.broadcast_object(None if arr is None else [list(arr.shape), arr.dtype.str], src)
        shape, dtype = tuple(meta[0]), np.dtype(meta[1])
        buf = np.ascontiguousarray(arr).copy() if comm.rank == src else np.empty(shape, dtype)
        comm.broadcast(buf, src)
        if kind == "tensor":
            out = Tensor(buf)
            return out.to(obj.device) if comm.rank == src else out
        return buf

    def reduce(self, values, op: str = "mean", weight=None):
        """Reduce a number, NumPy array, Tensor, or a (nested) dict/list of them across ranks
        with ONE allreduce. ``op``: 'mean', 'sum', 'max', 'min'. With ``weight`` (this rank's
        sample count), 'mean' is the weighted mean sum(w * v) / sum(w)."""
        if op not in ("mean", "sum", "max", "min"):
            raise ValueError(f"reduce: op must be 'mean', 'sum', 'max' or 'min', got {op!r}")
        if weight is not None and op != "mean":
            raise ValueError(f"reduce: weight only applies to op='mean', got op={op!r}")
        leaves: list = []
        _flatten(values, leaves)
        flat = (
            np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in leaves])
            if leaves
            else np.zeros(0)
        )
        if self.comm.size > 1:
            if weight is not None:
                w = float(weight)
                flat = np.concatenate([flat * w, [w]])
                self.comm.allreduce(flat, "sum")
                flat = flat[:-1] / flat[-1] if flat[-1] else flat[:-1] * np.nan
            else:
                self.comm.allreduce(flat, op)
        pos = [0]
        return _unflatten(values, flat, pos)

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if self.comm.size == 1:
            return bool(decision)
        flag = np.array([1 if decision else 0], np.int32)
        self.comm.allreduce(flag, "min" if all else "max")
        return bool(flag[0])

    # ---- model and data
    def setup_module(self, module):
        """``module`` in DistributedDataParallel (with SyncBatchNorm if asked); the inner
        module stays reachable as ``.module``."""
        from ember.distributed.ddp import DistributedDataParallel

        if self.sync_batchnorm:
            from ember.distributed.sync_batchnorm import convert_sync_batchnorm

            module = convert_sync_batchnorm(module, self.comm)
        self.model = DistributedDataParallel(module, comm=self.comm, **self.ddp_kwargs)
        return self.model

    @contextlib.contextmanager
    def block_backward_sync(self):
        """Backward passes inside skip the gradient allreduce (gradient accumulation)."""
        if self.model is None:
            yield
            return
        with self.model.no_sync():
            yield

    def sync_buffers(self) -> None:
        """Rank 0's buffers on every rank (call before evaluation with plain BatchNorm)."""
        if self.model is not None:
            self.model.sync_buffers()

    def process_dataloader(self, dataloader, stage: str):
        """A copy of ``dataloader`` whose sampler gives this rank its shard: padded and
        shuffled like the original for 'fit', unpadded for evaluation stages."""
        from ember.data.dataloader import DataLoader
        from ember.data.dataset import IterableDataset
        from ember.data.sampler import BatchSampler, RandomSampler
        from ember.distributed.sampler import DistributedSampler, UnpaddedDistributedSampler

        if self.comm.size == 1 or not isinstance(dataloader, DataLoader):
            return dataloader
        if isinstance(dataloader.dataset, IterableDataset):
            warnings.warn(
                "DDPStrategy: an IterableDataset cannot be sharded automatically; "
                "every rank reads the whole stream unless the dataset shards itself "
                "(use ember.distributed.world().rank/size)",
                stacklevel=2,
            )
            return dataloader
        if isinstance(dataloader.sampler, DistributedSampler):
            return dataloader
        if (
            dataloader.batch_sampler is not None
            and type(dataloader.batch_sampler) is not BatchSampler
        ):
            raise ValueError(
                f"DDPStrategy: the {stage} dataloader has a custom batch_sampler "
                f"({type(dataloader.batch_sampler).__name__}), which cannot be "
                "sharded automatically; give it a DistributedSampler yourself"
            )
        if stage == "fit":
            seed = self.comm.broadcast_object(_initial_seed(), 0)
            sampler = DistributedSampler(
                dataloader.dataset,
                self.comm.size,
                self.comm.rank,
                shuffle=isinstance(dataloader.sampler, RandomSampler),
                seed=seed,
            )
        else:
            sampler = UnpaddedDistributedSampler(dataloader.dataset, self.comm.size, self.comm.rank)
        kwargs = {k: getattr(dataloader, k) for k in _DL_ARGS}
        if not kwargs["num_workers"]:
            kwargs["prefetch_factor"] = None
        return DataLoader(
            dataloader.dataset,
            batch_size=dataloader.batch_size,
            sampler=sampler,
            drop_last=dataloader.drop_last,
            **kwargs,
        )

    def teardown(self) -> None:
        """Stop the gradient thread and remove DDP's hooks (the communicator stays)."""
        if self.model is not None:
            self.model.close()


def _initial_seed() -> int:
    from ember.tensor.random import initial_seed

    return int(initial_seed()) % (2**63 - 1)


def _flatten(values, out: list) -> None:
    from ember.tensor.tensor import Tensor

    if isinstance(values, dict):
        for v in values.values():
            _flatten(v, out)
    elif isinstance(values, (list, tuple)):
        for v in values:
            _flatten(v, out)
    elif isinstance(values, Tensor):
        d = values.data
        out.append(d if isinstance(d, np.ndarray) else d.get())
    else:
        out.append(values)


def _unflatten(template, flat, pos: list):
    from ember.tensor.tensor import Tensor

    if isinstance(template, dict):
        return type(template)((k, _unflatten(v, flat, pos)) for k, v in template.items())
    if isinstance(template, (list, tuple)):
        return type(template)(_unflatten(v, flat, pos) for v in template)
    if isinstance(template, Tensor):
        n = template.data.size
        arr = flat[pos[0] : pos[0] + n].reshape(template.data.shape).astype(template.data.dtype)
        pos[0] += n
        return Tensor(arr).to(template.device)
    if isinstance(template, np.ndarray):
        n = template.size
        arr = flat[pos[0] : pos[0] + n].reshape(template.shape)
        pos[0] += n
        return arr.astype(template.dtype) if template.dtype.kind == "f" else arr
    value = flat[pos[0]]
    pos[0] += 1
    if isinstance(template, (bool, np.bool_)):
        return bool(value)
    if isinstance(template, (int, np.integer)):
        return int(value) if value == int(value) else float(value)
    return float(value)


def strategy_for(name="auto", device="cpu"):
    """The strategy for a ``Trainer(strategy=...)`` name: 'ddp' always gives DDPStrategy;
    'auto' gives it when an MPI launcher started more than one rank, else one device."""
    if isinstance(name, Strategy):
        return name
    if name == "ddp":
        return DDPStrategy(device)
    if name in (None, "auto"):
        from ember.distributed.comm import launch_env, world

        env = launch_env()
        if env is not None and (env["size"] is None or env["size"] > 1) and world().size > 1:
            return DDPStrategy(device)
        return SingleDeviceStrategy(device)
    if name == "single_device":
        return SingleDeviceStrategy(device)
    raise ValueError(
        f"strategy={name!r}: expected 'auto', 'ddp', 'single_device' or a Strategy instance"
    )
