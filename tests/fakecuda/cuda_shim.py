"""A fake CUDA device on a CPU-only machine, strict where the real one is strict.

    with fake_cuda(device_count=1):
        main(["--device", "cuda", ...])       # a method's real CLI, "on cuda"

Inside the context:
- `torch.cuda.*` answers as if `device_count` GPUs were present: is_available() is True; set_device refuses an
  index-less device with the real ValueError; get/set_rng_state(_all) work on CPU ByteTensors and refuse
  anything else (and ordinals beyond device_count) as the real ones do; synchronize, memory statistics and
  empty_cache exist; autocast('cuda') and GradScaler('cuda') are enabled (Lightning picks the GPU too).
- A tensor moved or created on 'cuda' is a `CudaTensor`: it computes with a real CPU tensor inside, so losses,
  logs and checkpoints hold real numbers, but it says `device == cuda:0`, `.numpy()` refuses it, and any op
  mixing it with a CPU tensor of one or more dimensions raises the real message ("Expected all tensors to be on
  the same device, but found at least two devices, cuda:0 and cpu!"). CPU 0-dim tensors and CPU index tensors
  mix, as on CUDA. torch.Generator(device='cuda') is a generator that ops check the device of.
- torch.save writes CudaTensors as CPU tensors (weights_only-loadable; the real one keeps the device tag), and
  torch.load with a map_location naming cuda puts the loaded tensors on the fake device, as the real one does.
- DataLoader(pin_memory=True) and Tensor.pin_memory() pin nothing (there is no page-locked memory to ask
  for): the tensor itself comes back.

Limits: the C++ core takes a CudaTensor for a CPU tensor (the autograd engine would otherwise ask the CUDA
driver for streams), so autocast('cuda') is accepted but computes in fp32, cuDNN kernels are off, and a
`.cpu()` of a tensor that requires grad hands its gradient back on the CPU. MONAI's MetaTensor cannot wrap a
CudaTensor (see _monai_plain_on_cuda). Nothing here says anything about kernels, speed, memory or NCCL.

Why not FakeTensorMode: fake tensors hold no data, so `loss.item()`, logging, saving, numpy conversion and the
data path all fail; and on this machine its backward fails in the autograd engine ("hasPrimaryContext expects a
valid device index"). A CLI cannot run end to end under it. This shim keeps the data and the device checks.
"""

import contextlib
import functools
from unittest import mock

import torch
import torch._dynamo  # noqa: F401  imported lazily by the dispatch machinery; not while the mode is active
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# ops that legitimately take tensors of two devices (a copy between them)
MIXED_DEVICE_OPS = {aten.copy_.default, aten._to_copy.default, aten._foreach_copy_.default,
                    aten.copy.default, aten.set_.source_Tensor}


# indexing ops take CPU index tensors for a CUDA tensor (CUDA copies them over): their indices are not checked
INDEX_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}


class CudaTensor(torch.Tensor):
    """A tensor on the fake cuda device: a real CPU tensor (`.elem`) that reports device cuda:<index>.

    To the C++ core (the autograd engine, which would ask the CUDA driver for streams) it is a CPU tensor; to
    Python code it is on cuda: .device, .is_cuda, .get_device(), .to()/.cpu()/.cuda(), .numpy(), and every op
    runs through `_run`, which refuses the device mixes the real device refuses."""

    @staticmethod
    def __new__(cls, elem, index=0):
        t = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=elem.device, requires_grad=elem.requires_grad)
        t.elem, t.index = elem, index
        return t

    @property
    def device(self):
        return torch.device("cuda", self.index)

    is_cuda = property(lambda self: True)
    is_cpu = property(lambda self: False)

    def get_device(self):
        return self.index

    def __repr__(self, *, tensor_contents=None):
        return f"CudaTensor(cuda:{self.index}, {self.elem!r})"

    def __tensor_flatten__(self):
        return ["elem"], {"index": self.index}

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return CudaTensor(inner["elem"], meta["index"])

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda) and isinstance(args[0], CudaTensor):
            return _move(func, args[0], args[1:], kwargs)
        if func is torch.Tensor.tolist:  # a copy to the host, as .item()
            return args[0].elem.tolist()
        if func is torch.Tensor.__format__:  # f"{loss:.4f}" reads the value, as .item()
            return args[0].elem.__format__(*args[1:])
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})

    def numpy(self, *args, **kwargs):
        raise TypeError(f"can't convert cuda:{self.index} device type tensor to numpy. Use Tensor.cpu() to copy "
                        "the tensor to host memory first.")

    def __reduce_ex__(self, protocol):  # torch.save / pickle: as a CPU tensor (see module docstring)
        return self.elem.__reduce_ex__(protocol)


def _move(func, t, args, kwargs):
    """t.to(...), t.cpu(), t.cuda(): C++ takes t for a CPU tensor, so the device change is made here."""
    if func is torch.Tensor.cpu:
        device, dtype = torch.device("cpu"), None
    elif func is torch.Tensor.cuda:
        device, dtype = torch.device("cuda", _cuda_index(args[0] if args else kwargs.get("device", "cuda"))), None
    else:
        parse = {k: v for k, v in kwargs.items() if k != "copy"}
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **parse)
        if isinstance(args[0] if args else None, torch.Tensor):
            dtype = args[0].dtype
    if device is None:
        device = t.device
    elif device.type == "cuda":
        device = torch.device("cuda", _cuda_index(device))
    if device == t.device and dtype in (None, t.dtype) and not kwargs.get("copy"):
        return t
    return torch.ops.aten._to_copy.default(t, dtype=dtype or t.dtype, device=device)


def _cuda_index(device):
    if device is None:
        return None
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.current_device() if device.index is None else device.index


def _check_ordinal(index):
    if index >= torch.cuda.device_count():
        raise torch.AcceleratorError("CUDA error: invalid device ordinal") if hasattr(
            torch, "AcceleratorError") else RuntimeError("CUDA error: invalid device ordinal")


def _common_device(func, tensors):
    """The cuda index these tensors share, or None when none is on cuda; raises on a real device mix."""
    cuda = {t.index for t in tensors if isinstance(t, CudaTensor)}
    if not cuda:
        return None
    if len(cuda) > 1:
        a, b = sorted(cuda)[:2]
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"cuda:{a} and cuda:{b}!")
    if func not in MIXED_DEVICE_OPS:
        for t in tensors:
            if not isinstance(t, CudaTensor) and t.dim() > 0:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                                   f"devices, cuda:{next(iter(cuda))} and cpu! (when calling {func})")
    return next(iter(cuda))


def _leaves(x):
    """The tensors (and other leaves) of an op's arguments: aten ops take at most lists of tensors (faster than
    torch's pytree, which these tests would call for every op)."""
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    else:
        yield x


def _map(fn, x):
    if isinstance(x, tuple):
        return tuple(_map(fn, v) for v in x)
    if isinstance(x, list):
        return [_map(fn, v) for v in x]
    if isinstance(x, dict):
        return {k: _map(fn, v) for k, v in x.items()}
    return fn(x)


def _in_backward():
    return torch._C._current_graph_task_id() != -1


def _unwrap(x):
    return x.elem if isinstance(x, CudaTensor) else x


def _wrap(x, index):
    return CudaTensor(x, index) if isinstance(x, torch.Tensor) and not isinstance(x, CudaTensor) else x


def _run(func, args, kwargs):
    """Run one aten op: on the CPU tensors inside, with the outputs on the device the op puts them on."""
    checked = (args[:1] + args[2:], kwargs) if func in INDEX_OPS else (args, kwargs)
    tensors = [t for t in _leaves(checked) if isinstance(t, torch.Tensor)]
    index = _common_device(func, tensors)
    target = kwargs.get("device")
    if index is not None and target is not None and torch.device(target).type == "cpu" and _in_backward():
        target = None  # a derivative formula's self.options(): C++ takes a CudaTensor for a CPU tensor
    target_index = _cuda_index(target)
    if target_index is not None:
        _check_ordinal(target_index)
    if index is None and target_index is None:
        return func(*args, **kwargs)
    cpu_kwargs = dict(kwargs)
    if "device" in cpu_kwargs and target is not None:
        cpu_kwargs["device"] = torch.device("cpu") if torch.device(target).type == "cuda" else target
    if cpu_kwargs.get("pin_memory"):
        cpu_kwargs["pin_memory"] = False
    out = func(*_map(_unwrap, args), **_map(_unwrap, cpu_kwargs))
    if func is aten._local_scalar_dense.default:
        return out
    if target is not None and torch.device(target).type != "cuda":  # .to("cpu"), .cpu()
        return out
    out_index = target_index if target_index is not None else index
    if func._schema.is_mutable or (func._schema.returns and func._schema.returns[0].alias_info is not None):
        # in-place ops and views return (aliases of) their inputs: hand back the CudaTensor itself
        for a in _leaves(args):
            if isinstance(a, CudaTensor) and isinstance(out, torch.Tensor) and a.elem is out:
                return a
    return _map(lambda x: _wrap(x, out_index), out)


class _CudaMode(TorchDispatchMode):
    """Catches the ops on plain tensors that put something on cuda (.to('cuda'), torch.zeros(device='cuda')).

    It takes the FAKE mode slot, as FakeTensorMode does: torch then skips CUDA's lazy initialisation (which
    needs a driver) when a tensor is sent to 'cuda'."""

    def __init__(self):
        super().__init__()
        self._mode_key = torch._C._TorchDispatchModeKey.FAKE

    def __enter__(self):
        # as FakeTensorMode: a no-op CUDA device guard (.to('cuda') asks the guard for the current device), and
        # torch.tensor(data, device='cuda') built on the CPU then moved (through this mode)
        torch._C._ensureCUDADeviceGuardSet()
        self._lift = torch._C._only_lift_cpu_tensors()
        torch._C._set_only_lift_cpu_tensors(True)
        return super().__enter__()

    def __exit__(self, *exc):
        torch._C._set_only_lift_cpu_tensors(self._lift)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(t is CudaTensor for t in types) or _cuda_index(kwargs.get("device")) is not None:
            with torch.utils._python_dispatch._disable_current_modes():
                return _run(func, args, kwargs)
        return func(*args, **kwargs)


def to_cpu(obj):
    """Every CudaTensor in a nested structure replaced by its CPU tensor."""
    return pytree.tree_map(lambda x: x.elem.detach().clone() if isinstance(x, CudaTensor) else x, obj)


class _GeneratorCheck(TorchFunctionMode):
    """A generator must be on the device of the op that draws from it (checked here, where the Python generator
    object is still the one the code passed: the dispatcher hands on a new one, without its fake device)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = kwargs.get("generator")
        if isinstance(generator, torch._C.Generator):
            cuda = _cuda_index(kwargs.get("device")) is not None or any(
                isinstance(t, CudaTensor) for t in _leaves(args))
            on = "cuda" if cuda else "cpu"
            if generator.device.type != on:
                raise RuntimeError(f"Expected a '{on}' device type for generator but found "
                                   f"'{generator.device.type}'")
        return func(*args, **kwargs)


class _AnyGenerator(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, torch._C.Generator)


class CudaAwareGenerator(torch._C.Generator, metaclass=_AnyGenerator):
    """torch.Generator: device='cuda' gives a CPU generator that reports device cuda:<index> (ops check it)."""

    def __new__(cls, device="cpu"):
        index = _cuda_index(device)
        if index is None:
            return torch._C.Generator(device)
        _check_ordinal(index)
        generator = super().__new__(cls)
        generator.cuda_index = index
        return generator

    def __init__(self, device="cpu"):
        super().__init__()

    @property
    def device(self):
        return torch.device("cuda", self.cuda_index)


def _rng_bytes(state):
    """What the C++ generators check, for a CudaTensor too (C++ takes it for a CPU tensor)."""
    if isinstance(state, CudaTensor) or state.dtype != torch.uint8:
        raise RuntimeError("RNG state must be a torch.ByteTensor")
    return state


def _cpu_set_rng_state(real, new_state):
    return real(_rng_bytes(new_state))


class FakeCuda:
    """The torch.cuda functions this project calls, answering as `device_count` GPUs would."""

    def __init__(self, device_count=1):
        self.count = device_count
        self.current = 0
        self.generators = [torch.Generator().manual_seed(1000 + i) for i in range(device_count)]
        self.calls = []  # (name, args): what the code under test asked of torch.cuda

    def is_available(self):
        return True

    def device_count(self):
        return self.count

    def _index(self, device):
        if device is None:
            return self.current
        if isinstance(device, int):
            index = device
        else:
            device = torch.device(device)
            if device.type != "cuda":
                raise ValueError(f"Expected a cuda device, but got: {device}")
            index = self.current if device.index is None else device.index
        _check_ordinal(index)
        return index

    def set_device(self, device):
        self.calls.append(("set_device", device))
        # the real one: torch.cuda._utils._get_device_index refuses torch.device("cuda") (no index)
        index = torch.cuda._utils._get_device_index(device)
        if index >= 0:
            _check_ordinal(index)
            self.current = index

    def current_device(self):
        return self.current

    def synchronize(self, device=None):
        self.calls.append(("synchronize", device))
        self._index(device)

    def max_memory_allocated(self, device=None):
        self._index(device)
        return 0

    memory_allocated = max_memory_reserved = memory_reserved = max_memory_allocated

    def reset_peak_memory_stats(self, device=None):
        self._index(device)

    def empty_cache(self):
        pass

    def get_device_name(self, device=None):
        return f"Fake CUDA device {self._index(device)}"

    def get_device_capability(self, device=None):
        self._index(device)
        return (9, 0)

    def is_bf16_supported(self, including_emulation=True):
        return True

    def get_rng_state(self, device="cuda"):
        return self.generators[self._index(device)].get_state()

    def get_rng_state_all(self):
        return [g.get_state() for g in self.generators]

    def set_rng_state(self, new_state, device="cuda"):
        self.calls.append(("set_rng_state", device))
        # the real one hands the tensor to the device's generator: a CPU ByteTensor or a RuntimeError
        self.generators[self._index(device)].set_state(_rng_bytes(new_state))

    def set_rng_state_all(self, new_states):
        for i, state in enumerate(new_states):
            self.set_rng_state(state, i)

    def is_current_stream_capturing(self):
        return False

    def manual_seed(self, seed):
        self.generators[self.current].manual_seed(int(seed))

    def manual_seed_all(self, seed):
        for g in self.generators:
            g.manual_seed(int(seed))


FAKED = ("is_available", "device_count", "set_device", "current_device", "synchronize", "max_memory_allocated",
         "memory_allocated", "max_memory_reserved", "memory_reserved", "reset_peak_memory_stats", "empty_cache",
         "get_device_name", "get_device_capability", "is_bf16_supported", "get_rng_state", "get_rng_state_all",
         "set_rng_state", "set_rng_state_all", "manual_seed", "manual_seed_all", "is_current_stream_capturing")


def _load_onto_fake(real_load, *args, map_location=None, **kwargs):
    """torch.load; a map_location naming cuda puts every loaded tensor on the fake device."""
    index = None
    if isinstance(map_location, (str, torch.device)):
        index = _cuda_index(map_location)
    out = real_load(*args, map_location="cpu" if index is not None else map_location, **kwargs)
    if index is None:
        return out
    _check_ordinal(index)
    return pytree.tree_map(lambda x: CudaTensor(x, index) if isinstance(x, torch.Tensor) else x, out)


def _pin_nothing(data, device=None):
    return data


def _pin_tensor_nothing(tensor, *args, **kwargs):
    return tensor


@contextlib.contextmanager
def _monai_plain_on_cuda():
    """MONAI's MetaTensor cannot take a CudaTensor in (a tensor has one Python type): one made from a CudaTensor
    stays that plain CudaTensor, as MONAI makes plain tensors under set_track_meta(False), a path its
    transforms support. Metadata on the GPU side is lost here only, not on the CPU (loader) side."""
    import sys

    if "monai" not in sys.modules:
        yield
        return
    from monai.data import MetaTensor

    real_new = MetaTensor.__new__

    def new(cls, x, *args, **kwargs):
        return x if isinstance(x, CudaTensor) else real_new(cls, x, *args, **kwargs)

    with mock.patch.object(MetaTensor, "__new__", new):
        yield


@contextlib.contextmanager
def _cudnn_kernels_off():
    """No cuDNN kernels (composite ops such as batch_norm would pick cudnn_batch_norm, which has no CPU kernel);
    the cudnn flags the code under test sets (benchmark, deterministic) are restored afterwards."""
    before = (torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


@contextlib.contextmanager
def fake_cuda(device_count=1):
    """Everything in the module docstring; yields the FakeCuda (its .calls list what was asked)."""
    fake = FakeCuda(device_count)
    with contextlib.ExitStack() as stack:
        for name in FAKED:
            stack.enter_context(mock.patch(f"torch.cuda.{name}", getattr(fake, name)))
        for where in ("torch.cuda.random", "torch.cuda.memory", "torch.cuda.graphs"):
            module = __import__(where, fromlist=["_"])
            for name in FAKED:
                if hasattr(module, name):
                    stack.enter_context(mock.patch(f"{where}.{name}", getattr(fake, name)))
        stack.enter_context(mock.patch("torch.cuda.amp.common.amp_definitely_not_available", lambda: False))
        stack.enter_context(mock.patch("torch.Generator", CudaAwareGenerator))
        for where in ("torch.set_rng_state", "torch.random.set_rng_state"):
            stack.enter_context(mock.patch(where, functools.partial(_cpu_set_rng_state, torch.random.set_rng_state)))
        stack.enter_context(mock.patch("torch.load", functools.partial(_load_onto_fake, torch.load)))
        stack.enter_context(mock.patch("torch.utils.data._utils.pin_memory.pin_memory", _pin_nothing))
        stack.enter_context(mock.patch.object(torch.Tensor, "pin_memory", _pin_tensor_nothing))
        stack.enter_context(_cudnn_kernels_off())
        stack.enter_context(_monai_plain_on_cuda())
        stack.enter_context(_CudaMode())
        stack.enter_context(_GeneratorCheck())
        yield fake
