"""Will it fit? FLOPs, memory and GPU-hours of one training configuration, worked out without a GPU.

Every training CLI takes `--plan` (flags from `add_plan_args`): instead of training, the method builds its
model(s), optimizer(s) and one training step from its own parsed flags (a `Plan`), and `run_plan` prints:

- FLOPs per sample, forward + backward (torch.utils.flop_counter.FlopCounterMode; with activation
  checkpointing this includes the recomputed forward, which the GPU also spends time on);
- memory: parameters + buffers, gradients, optimizer state, activations and temporaries, and the peak;
- whether that fits the memory of `--plan_gpu` (shared/gpus.py), and the largest batch that would;
- GPU-hours of the configured schedule at `--plan_mfu` of the device's peak for the precision used.

How the memory is found: the step runs twice under FakeTensorMode, where tensors have shapes, dtypes and
devices but no data, so a batch of 96^3 volumes costs milliseconds and no RAM. `LiveBytes`, a
TorchDispatchMode, sees every tensor each operation creates and, through a weak reference to its storage,
when it is freed; the peak of the live bytes during the second step (the first creates the optimizer state)
is the estimate, split by what the live storages held at that moment. Each storage is rounded up to the CUDA
caching allocator's 512-byte blocks. What no tracker of tensors sees: the CUDA context, cuDNN/cuBLAS
workspaces and the allocator's fragmentation, hence the margin of NEEDED_FACTOR and NEEDED_EXTRA_GIB.

Fake tensors live on the CPU here (autograd needs a real CUDA context for fake CUDA tensors), so mixed
precision is CPU autocast to the same dtype: convolutions and matmuls, which hold nearly all the bytes and
FLOPs, are cast as on a GPU. CUDA autocast also runs softmax, layer_norm and group_norm in fp32 where CPU
autocast keeps the lower precision: attention-heavy models (SwinUNETR, BERT) may need somewhat more on a GPU.
"""

import gc
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

from shared.gpus import find_gpu, gpu_names

GIB = 2**30
CUDA_BLOCK = 512                    # the CUDA caching allocator rounds every allocation up to this
NEEDED_FACTOR, NEEDED_EXTRA_GIB = 1.10, 1.0   # fragmentation; CUDA context + cuDNN/cuBLAS workspaces
CATEGORIES = ("parameters", "gradients", "optimizer", "activations")
CONV_OPS = ("convolution", "convolution_backward")
READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default)
INDEXING = (torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default)
SMALL_CONSTANT = 1024   # elements: float tensors made of constants up to this size keep their values under fake mode
SMALL_INTEGER = 1 << 20  # elements: the same for integer and boolean tensors (masks, indices, token ids)


def add_plan_args(parser, samples_help="training samples per epoch (default: the original dataset's size)"):
    """The planner's flags, the same in every CLI."""
    g = parser.add_argument_group("planning (--plan: FLOPs, memory, fit and GPU-hours of this configuration; "
                                  "no GPU, no data needed)")
    g.add_argument("--plan", action="store_true",
                   help="print the plan of the configuration the other flags describe, then exit")
    g.add_argument("--plan_gpu", default="H100", help=f"device to fit: {', '.join(gpu_names())}")
    g.add_argument("--plan_mfu", type=float, default=0.35,
                   help="model-FLOP utilisation assumed for the GPU-hours (fraction of the precision's peak)")
    g.add_argument("--plan_samples", type=int, default=None, help=samples_help)
    g.add_argument("--plan_gpus", type=int, default=1,
                   help="GPUs sharing the run: wall-clock = GPU-hours / N (and where a batch flag is per node, "
                        "as DiRA's --batch-size, each GPU holds 1/N of it)")
    return g


@dataclass
class Plan:
    """One method's training configuration, as its flags describe it.

    make_modules() returns the modules holding the parameters (a dict name -> nn.Module), built for real on
    the CPU with the method's own build functions (some constructors read tensor values, which fake tensors
    cannot give); the planner then swaps their tensors for fake ones. make_step(modules) runs under the fake
    mode and returns (optimizers, step): step() makes one batch and runs one training step on it (forward,
    loss, backward, optimizer steps) in the order of the method's loop.
    """
    method: str
    config: str                       # one line: model, input and batch sizes
    precision: str                    # fp32, bf16 or fp16 (what runs on a GPU with these flags)
    checkpointing: bool
    sample: str                       # what one sample is: "cube", "volume", "image", ...
    samples_per_step: int
    total_samples: float              # samples the whole schedule trains on (steps x samples_per_step)
    pass_samples: int                 # samples of one pass over the training set
    schedule: str                     # how the schedule was counted, in words
    make_modules: Callable
    make_step: Callable
    batch_flag: str = "--batch_size"  # the flag setting samples_per_step (for the "largest batch" hint)
    batch_per_flag: int = 1           # samples per unit of batch_flag
    notes: list = field(default_factory=list)


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, by category, and their peak; storages rounded up to `block`.

    With fake=True it also carries the values of small tensors computed from constants only (`arange(2, 5)`,
    `linspace`, a shape turned into a tensor), so that code reading them (`.tolist()`, `.item()`, as MONAI's
    losses do) runs under FakeTensorMode, which otherwise refuses any read of a value."""

    def __init__(self, block=CUDA_BLOCK, fake=True):
        super().__init__()
        self.block, self.fake = block, fake
        self.info = {}          # id(storage) -> [bytes, category, weakref]
        self.now = dict.fromkeys(CATEGORIES, 0)
        self.peak, self.at_peak = 0, dict(self.now)
        self.raw_now = self.raw_peak = 0  # the same without rounding: what a CPU allocator is asked for
        self.values = WeakIdKeyDictionary()  # fake tensor -> its real value (small constants only)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.fake and func in READS and self._known(args[0]):
            with unset_fake_temporarily():
                return self._value(args[0]).item()
        if self.fake and func in INDEXING:
            args = (args[0], self._integer_indices(args[1]), *args[2:])
        out = func(*args, **kwargs)
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if self.fake:
            self._carry_values(func, args, kwargs, outs)
        for t in outs:
            self.track(t)
        return out

    def _known(self, t):
        return not isinstance(t, FakeTensor) or t in self.values

    def _value(self, t):
        return self.values[t] if isinstance(t, FakeTensor) else t

    def _carry_values(self, func, args, kwargs, outs):
        """Compute a small constant result for real too; forget a value an op with unknown inputs changed."""
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        small = outs and all(t.numel() <= (SMALL_CONSTANT if t.is_floating_point() else SMALL_INTEGER) for t in outs)
        if small and torch.Tag.nondeterministic_seeded not in func.tags and all(map(self._known, inputs)):
            try:
                with unset_fake_temporarily():
                    real = func(*tree_map(self._value_if_tensor, args), **tree_map(self._value_if_tensor, kwargs))
                for f, r in zip(outs, [t for t in tree_leaves(real) if isinstance(t, torch.Tensor)]):
                    self.values[f] = r
                return
            except Exception:  # noqa: BLE001 -- any failure: the value stays unknown, as without this
                pass
        for t in outs:
            self.values.pop(t, None)

    def _integer_indices(self, indices):
        """A known boolean mask (`x[:, upper_triangle]`) as the integer indices it selects, whose count
        fake tensors cannot know otherwise."""
        out = []
        for idx in indices:
            if isinstance(idx, FakeTensor) and idx.dtype == torch.bool and idx in self.values:
                with unset_fake_temporarily():
                    real = self.values[idx].nonzero(as_tuple=True)
                for r in real:
                    fake = idx.fake_mode.from_tensor(r)
                    self.values[fake] = r
                    out.append(fake)
            else:
                out.append(idx)
        return out

    def _value_if_tensor(self, x):
        return self._value(x) if isinstance(x, torch.Tensor) else x

    def _storage(self, t):
        try:
            return t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or other storage-less tensors
            return None

    def track(self, t, category="activations"):
        st = self._storage(t)
        if st is None:
            return
        key = id(st)
        entry = self.info.get(key)
        if entry is not None and entry[2]() is st:
            if category != "activations":
                self.retag(t, category)
            return
        raw = st.nbytes()
        size = -(-raw // self.block) * self.block if self.block else raw
        ref = weakref.ref(st, lambda _ref, key=key: self._freed(key, _ref))
        self.info[key] = [size, category, ref, raw]
        self.now[category] += size
        self.raw_now += raw
        self.raw_peak = max(self.raw_peak, self.raw_now)
        total = sum(self.now.values())
        if total > self.peak:
            self.peak, self.at_peak = total, dict(self.now)

    def retag(self, t, category):
        """Count a tracked tensor's storage under another category (a gradient, an optimizer state)."""
        st = self._storage(t)
        entry = self.info.get(id(st)) if st is not None else None
        if entry is None or entry[2]() is not st:
            self.track(t, category)
            return
        self.now[entry[1]] -= entry[0]
        self.now[category] += entry[0]
        entry[1] = category

    def _freed(self, key, ref):
        entry = self.info.get(key)
        if entry is not None and entry[2] is ref:
            self.now[entry[1]] -= entry[0]
            self.raw_now -= entry[3]
            del self.info[key]

    def reset_peak(self):
        self.peak, self.at_peak = sum(self.now.values()), dict(self.now)
        self.raw_peak = self.raw_now


@dataclass
class Estimate:
    parameters: int                   # count
    trainable: int
    at_peak: dict                     # bytes per category at the peak
    peak: int                         # bytes, each storage rounded up to the allocator's block
    raw_peak: int                     # bytes, not rounded
    flops_per_step: int
    conv_flops_per_step: int          # the part in convolutions (TF32 on a GPU in fp32)


def _tensors_of(optimizer):
    return [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def estimate(plan, block=CUDA_BLOCK, fake=True):
    """Build the plan's step and run it twice; the second step's FLOPs and peak of live bytes.
    fake=False runs it for real on the CPU (small configurations: the tests compare the two)."""
    tracker = LiveBytes(block, fake)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else _Nothing()
    modules = plan.make_modules()
    if fake:
        modules = {name: to_fake(m, mode, tracker) for name, m in modules.items()}
    gc.collect()
    with mode, tracker:
        optimizers, step = plan.make_step(modules)
        params = {id(p): p for m in modules.values() for p in m.parameters()}
        for m in modules.values():
            for t in [*m.parameters(), *m.buffers()]:
                tracker.retag(t, "parameters")
        hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.retag(p.grad, "gradients"))
                 for p in params.values() if p.requires_grad]
        step()  # the first step creates the optimizer state (and lazy buffers)
        for opt in optimizers:
            for t in _tensors_of(opt):
                tracker.retag(t, "optimizer")
        gc.collect()  # each step starts without the garbage of the one before, as in the measurement
        tracker.reset_peak()
        with FlopCounterMode(display=False) as flops:
            step()
        for h in hooks:
            h.remove()
    counts = flops.get_flop_counts().get("Global", {})
    conv = sum(v for op, v in counts.items() if str(op).split(".")[-1] in CONV_OPS)
    return Estimate(parameters=sum(p.numel() for p in params.values()),
                    trainable=sum(p.numel() for p in params.values() if p.requires_grad),
                    at_peak=dict(tracker.at_peak), peak=tracker.peak, raw_peak=tracker.raw_peak,
                    flops_per_step=int(flops.get_total_flops()), conv_flops_per_step=int(conv))


def to_fake(module, mode, tracker):
    """`module` with every parameter and buffer replaced by a fake tensor of the same shape, dtype and
    device (tied parameters stay tied); the real storage is released. Small buffers keep their values in
    `tracker` (a queue pointer, a step counter: code reads them)."""
    done = {}

    def fake(t):
        if id(t) not in done:
            f = mode.from_tensor(t.detach())
            if isinstance(t, torch.nn.Parameter):
                f = torch.nn.Parameter(f, requires_grad=t.requires_grad)
            elif t.numel() <= SMALL_CONSTANT:
                tracker.values[f] = t.detach().clone()
            done[id(t)] = f
        return done[id(t)]

    for sub in module.modules():
        for table in (sub._parameters, sub._buffers):
            for key, t in table.items():
                if t is not None:
                    table[key] = fake(t)
    return module


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def measured_cpu_peak(plan):
    """The real peak of a CPU run of the plan's two steps, in bytes: the parameters and buffers, plus the most
    the CPU allocator held at once during the steps by its own records (torch.profiler with profile_memory
    reports every allocation with the allocator's running total). A reference for `estimate`, independent of
    it (it also sees buffers allocated inside kernels); small configurations only."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    modules = plan.make_modules()
    optimizers, step = plan.make_step(modules)
    gc.collect()
    before = [t for m in modules.values() for t in [*m.parameters(), *m.buffers()]]
    base = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in before}.values())
    with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        warnings.simplefilter("ignore")  # the profiler's notes on events it clears
        step()  # the first step allocates gradients and optimizer state inside the profile, so their frees count
        gc.collect()
        step()
    events, allocations = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while events:
        e = events.pop()
        events.extend(e.children)
        if e.tag == _EventType.Allocation:
            allocations.append((e.start_time_ns, e.extra_fields.alloc_size, e.extra_fields.total_allocated))
    # the running total also holds what earlier profiles allocated and freed after they stopped: start from it
    first = min(allocations)
    start = first[2] - first[1]
    return base + max(total for _, _, total in allocations) - start


# ---------------------------------------------------------------------------------------------- report

def precision_peaks(gpu, precision):
    """(TFLOP/s for convolutions, for everything else) at this precision on this device."""
    if precision in ("bf16", "fp16"):
        return gpu.bf16_tflops, gpu.bf16_tflops
    return gpu.tf32_tflops, gpu.fp32_tflops  # cuDNN convolutions use TF32 by default, matmuls do not


def needed_bytes(peak):
    return peak * NEEDED_FACTOR + NEEDED_EXTRA_GIB * GIB


def summarize(plan, est, gpu_name="H100", mfu=0.35, gpus=1):
    """The plan's numbers as a dict (bytes, FLOPs, hours), for the table and for tests."""
    gpu = find_gpu(gpu_name)
    if gpu is None:
        raise SystemExit(f"--plan_gpu {gpu_name!r}: not in the device table ({', '.join(gpu_names())})")
    n = plan.samples_per_step
    needed = needed_bytes(est.peak)
    memory = gpu.memory_gib * GIB
    per_sample_act = est.at_peak["activations"] / n
    fixed = est.peak - est.at_peak["activations"]
    largest = int((memory - NEEDED_EXTRA_GIB * GIB) / NEEDED_FACTOR - fixed) // max(1, int(per_sample_act))
    conv_peak, other_peak = precision_peaks(gpu, plan.precision)
    step_s = (est.conv_flops_per_step / (conv_peak * 1e12)
              + (est.flops_per_step - est.conv_flops_per_step) / (other_peak * 1e12)) / mfu
    steps = plan.total_samples / n
    return {"method": plan.method, "gpu": gpu.name, "gpu_memory_gib": gpu.memory_gib, "mfu": mfu,
            "parameters": est.parameters, "trainable": est.trainable,
            "flops_per_sample": est.flops_per_step / n, "bytes": est.at_peak, "peak_bytes": est.peak,
            "raw_peak_bytes": est.raw_peak,
            "needed_bytes": needed, "fits": needed <= memory, "largest_batch": largest // plan.batch_per_flag,
            "step_s": step_s, "steps": steps, "gpu_hours": steps * step_s / 3600, "gpus": gpus,
            "pass_gpu_hours": plan.pass_samples / n * step_s / 3600,
            "peaks_tflops": (conv_peak, other_peak)}


def format_plan(plan, s):
    """The plan as a markdown table (what --plan prints and the READMEs show)."""
    b = s["bytes"]
    fit = "**fits**" if s["fits"] else "**does not fit**"
    conv_peak, other_peak = s["peaks_tflops"]
    peaks = (f"{conv_peak:g} TFLOP/s" if conv_peak == other_peak else
             f"{conv_peak:g} TFLOP/s TF32 for convolutions, {other_peak:g} fp32 otherwise")
    hint = (f"; largest that fits: {plan.batch_flag} {s['largest_batch']}" if s["largest_batch"] >= 1 else
            "; even one sample per step does not fit")
    rows = [
        ("configuration", plan.config),
        ("precision", f"{plan.precision}, activation checkpointing {'on' if plan.checkpointing else 'off'}"),
        ("parameters", f"{s['parameters'] / 1e6:.1f} M ({s['trainable'] / 1e6:.1f} M trained)"),
        (f"FLOPs per {plan.sample} (forward + backward)", f"{s['flops_per_sample'] / 1e9:,.1f} GFLOP"),
        ("parameters + buffers", _gib(b["parameters"])),
        ("gradients (those alive at the peak)", _gib(b["gradients"])),
        ("optimizer state", _gib(b["optimizer"])),
        (f"activations + temporaries ({plan.samples_per_step} {_plural(plan.sample)} per step)",
         _gib(b["activations"])),
        ("peak of the step", _gib(s["peak_bytes"])),
        (f"fits {s['gpu']} ({s['gpu_memory_gib']:g} GiB)?",
         f"{fit}: needs about {_gib(s['needed_bytes'])} (peak x {NEEDED_FACTOR} + {NEEDED_EXTRA_GIB:g} GiB){hint}"),
        ("schedule", plan.schedule),
        (f"GPU-hours at {s['mfu']:.0%} of {peaks}",
         f"{_hours(s['gpu_hours'])} ({s['steps']:,.0f} steps of {s['step_s']:.3f} s; "
         f"{_hours(s['pass_gpu_hours'])} per pass over the training set)"),
    ]
    if s["gpus"] > 1:
        rows.append((f"wall-clock on {s['gpus']} GPUs", f"{s['gpu_hours'] / s['gpus']:,.1f} h (no communication "
                                                        "cost counted)"))
    lines = [f"Plan for {plan.method} on {s['gpu']}:", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += [f"\n- {note}" for note in plan.notes]
    return "\n".join(lines)


def _plural(word):
    return word + ("es" if word.endswith(("ch", "sh", "s", "x")) else "s")


def _hours(h):
    return f"{h:,.1f} GPU-h" if h >= 1 else f"{h * 60:.1f} GPU-min"


def _gib(n):
    return f"{n / GIB:,.2f} GiB"


def run_plan(plan, args):
    """Estimate, print and return the summary for the flags --plan_gpu and --plan_mfu."""
    s = summarize(plan, estimate(plan), args.plan_gpu, args.plan_mfu, args.plan_gpus)
    print(format_plan(plan, s))
    return s

