"""Pipeline (model) parallelism: every model's layers cut into S stages over S processes, each
batch run as micro-batches with a GPipe schedule (all forwards, then all backwards).

How the task sees it: each model becomes a `PipelineModule`, an nn.Module whose parameters
are only this rank's stage, and whose forward takes the whole batch and returns the whole
output on every rank. Every rank runs the same task code (same batches, same task RNG); the
model calls are collective. Inside a call, stage 0 cuts the batch into micro-batches, each
stage receives a micro-batch's activations from the previous rank, runs its layers and sends
the result on without waiting (so stage s works on micro-batch m while stage s+1 works on
m-1), and the last stage's outputs, concatenated, are broadcast to all ranks. The call is one
autograd node: when the task's loss is backpropagated (on every rank), the last stage
backpropagates each micro-batch with its slice of the output gradient, gradients of the
activations travel back stage by stage, and the gradient of the input is broadcast from
stage 0, so a loss may go on backpropagating into whatever produced the input. Parameter
gradients are summed over the micro-batches, which gives exactly the whole batch's gradient.

Why our own stage split rather than torch.distributed.pipelining: its schedules own the
loss (a per-micro-batch `loss_fn(output, target)` at the last stage) and run forward and
backward together in `step()`. That works for one network (tried with the 3DGAN
discriminator and its two outputs, torch 2.13), but not for the GAN step, where one loss
couples two discriminator passes (real and generated showers) and the generator's loss
needs its own output (the summed energy) and the gradient of the discriminator's input,
which `step()` does not return. Making a pipelined model an ordinary autograd function
keeps every task, loss and optimizer unchanged. The price: the loss needs the whole batch's
output, so the schedule is GPipe (the activations of all micro-batches are kept until
backward), not 1F1B. Batch norm in training mode normalizes each micro-batch with its own
statistics (and updates the running statistics once per micro-batch): with micro-batches the
numbers differ from one unsplit batch, as in any GPipe implementation.

The cuts: `pipeline_stages.py`; the messages between stages: `pipeline_links.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.autograd.function import once_differentiable

from scaletrain.config import ParallelConfig
from scaletrain.errors import CheckpointError, ConfigError, TrainingError
from scaletrain.parallel.pipeline_links import BACKWARD_TAG, FORWARD_TAG, Links
from scaletrain.parallel.pipeline_stages import StagePlan, chain_of, plan_stages
from scaletrain.parallel.stopvote import StopVote
from scaletrain.parallel.strategy import Strategy
from scaletrain.parallel.world import World, destroy_process_group, init_process_group

# ---------------------------------------------------------------------------- the module


@dataclass
class _Run:
    """One differentiable model call: the stage's inputs and outputs of every micro-batch."""

    call: int
    sizes: list[int]
    x_requires_grad: bool
    x_shape: tuple[int, ...]
    x_dtype: torch.dtype
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)


def _split_sizes(batch: int, microbatches: int) -> list[int]:
    """Micro-batch sizes: `microbatches` nearly equal parts (fewer when the batch is small)."""
    n = min(microbatches, batch)
    return [batch // n + (1 if i < batch % n else 0) for i in range(n)]


def _boundary(value: Any, where: str) -> tuple[int, list[torch.Tensor]]:
    """(kind, tensors) of what crosses a stage boundary: 0 = one tensor, 1 = a tuple."""
    if isinstance(value, torch.Tensor):
        return 0, [value]
    if isinstance(value, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in value):
        return 1, list(value)
    raise ConfigError(
        f"parallel.mode pipeline: {where} passes a {type(value).__name__} to the next stage; "
        "a stage boundary carries a tensor or a tuple of tensors"
    )


class PipelineModule(nn.Module):
    """This rank's stage of one model; called like the whole model (see the module docstring).

    `key_map` maps the stage's state-dict keys to the unsplit model's, `param_index` gives
    the position of each of the stage's parameters in the unsplit model's `parameters()`, so
    that checkpoints (models and optimizers) are those of one process.
    """

    def __init__(
        self,
        model_name: str,
        layers: list[nn.Module],
        plan: StagePlan,
        stage: int,
        links: Links,
        microbatches: int,
        key_map: dict[str, list[str]],
        param_index: list[int],
        full_keys: list[str],
        full_params: int,
    ) -> None:
        super().__init__()
        start, stop = plan.bounds[stage]
        self.stage = nn.Sequential(*layers[start:stop])
        self.model_name = model_name
        self.plan = plan
        self.stage_index = stage
        self.stages = plan.stages
        self.first_layer = start
        self.links = links
        self.microbatches = microbatches
        self.key_map = key_map
        self.param_index = param_index
        self.full_keys = full_keys
        self.full_params = full_params
        self._calls = 0
        self._spec: Any = None  # pytree structure of the output
        self._spec_text: str | None = None  # ... as last sent to the other ranks

    @property
    def first(self) -> bool:
        return self.stage_index == 0

    @property
    def last(self) -> bool:
        return self.stage_index == self.stages - 1

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> Any:
        if not isinstance(x, torch.Tensor):
            raise ConfigError(
                f"parallel.mode pipeline: model {self.model_name!r} must be called with one "
                f"tensor, got {type(x).__name__}"
            )
        if x.dim() == 0 or x.shape[0] == 0:
            raise TrainingError(f"pipeline: model {self.model_name!r} called with an empty batch")
        self._calls += 1
        if torch.is_grad_enabled():
            # the anchor makes the output require grad on every rank alike, so that backward
            # reaches this call on all of them (a rank whose stage is frozen still relays)
            anchor = torch.empty(0, device=x.device, requires_grad=True)
            leaves = _PipelineCall.apply(self, anchor, x)
        else:
            leaves = self._forward(x, None)
        return pytree.tree_unflatten(list(leaves), self._spec)

    def _forward(self, x: torch.Tensor, run: _Run | None) -> list[torch.Tensor]:
        call, s = self._calls, self.stage_index
        sizes = _split_sizes(x.shape[0], self.microbatches)
        chunks = torch.split(x, sizes) if self.first else [None] * len(sizes)
        pending: list[Any] = []
        outs: list[Any] = []
        for chunk in chunks:
            if self.first:
                inp: Any = chunk
                if run is not None:
                    inp = chunk.detach().requires_grad_(x.requires_grad)
            else:
                kind, tensors, grads = self.links.recv(call, s - 1, FORWARD_TAG)
                if run is not None:
                    for t, g in zip(tensors, grads, strict=True):
                        if t is not None and g and t.is_floating_point():
                            t.requires_grad_(True)
                inp = tensors[0] if kind == 0 else tuple(tensors)
            with torch.enable_grad() if run is not None else torch.no_grad():
                y = self.stage(inp)
            if not self.last:
                kind, tensors = _boundary(y, f"layer {self.first_layer + len(self.stage) - 1} "
                                             f"of {self.model_name!r}")  # fmt: skip
                pending += self.links.send(call, kind, list(tensors), s + 1, FORWARD_TAG)
            else:
                outs.append(y)
            if run is not None:
                run.inputs.append(inp)
                run.outputs.append(y)
        self.links.wait(pending, s + 1)
        leaves: list[torch.Tensor] | None = None
        text: str | None = None
        if self.last:
            leaves, self._spec = self._concat(outs)
            text = pytree.treespec_dumps(self._spec)
            text, self._spec_text = (None if text == self._spec_text else text), text
        if self.stages > 1:  # the whole output, from the last stage to every rank
            leaves, text = self.links.broadcast(call, leaves, text, self.stages - 1)
            if text is not None and not self.last:
                self._spec = pytree.treespec_loads(text)
        assert leaves is not None
        return leaves

    def _concat(self, outs: list[Any]) -> tuple[list[torch.Tensor], Any]:
        flat = [pytree.tree_flatten(o) for o in outs]
        spec = flat[0][1]
        for leaves, other in flat:
            if other != spec or not all(
                isinstance(t, torch.Tensor) and t.dim() > 0 for t in leaves
            ):
                raise ConfigError(
                    f"parallel.mode pipeline: the outputs of model {self.model_name!r} must be "
                    "tensors with a batch dimension (alone, in a tuple or a dict)"
                )
        n = len(flat[0][0])
        return [torch.cat([f[0][i].detach() for f in flat]) for i in range(n)], spec

    # ------------------------------------------------------------------ backward

    def _backward(self, run: _Run, grads: list[torch.Tensor | None]) -> torch.Tensor | None:
        s = self.stage_index
        pieces: list[tuple[torch.Tensor, ...] | None] = []
        if self.last:
            pieces = [None if g is None else torch.split(g, run.sizes) for g in grads]
        pending: list[Any] = []
        x_grads: list[torch.Tensor | None] = [None] * len(run.sizes)
        for m in reversed(range(len(run.sizes))):
            y, inp = run.outputs[m], run.inputs[m]
            if self.last:
                outs = pytree.tree_leaves(y)
                gs = [None if p is None else p[m] for p in pieces]
            else:
                outs = _boundary(y, self.model_name)[1]
                _, gs, _ = self.links.recv(run.call, s + 1, BACKWARD_TAG)
            pairs = [
                (o, g) for o, g in zip(outs, gs, strict=True) if g is not None and o.requires_grad
            ]
            if pairs:
                torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            ins = [inp] if isinstance(inp, torch.Tensor) else list(inp)
            in_grads = [t.grad if t.requires_grad else None for t in ins]
            if not self.first:
                pending += self.links.send(run.call, 1, in_grads, s - 1, BACKWARD_TAG)
            else:
                x_grads[m] = in_grads[0]
            run.outputs[m] = run.inputs[m] = None  # free this micro-batch's activations
        self.links.wait(pending, s - 1)
        if not run.x_requires_grad:
            return None
        if self.first:
            parts = [
                torch.zeros((n, *run.x_shape[1:]), dtype=run.x_dtype, device=self.links.device)
                if g is None
                else g
                for g, n in zip(x_grads, run.sizes, strict=True)
            ]
            grad_x = torch.cat(parts)
        else:
            grad_x = torch.empty(run.x_shape, dtype=run.x_dtype, device=self.links.device)
        if self.stages > 1:
            self.links.broadcast_like(grad_x, 0)
        return grad_x

    # ------------------------------------------------------------------ state

    def local_state(self) -> dict[str, torch.Tensor]:
        """This stage's tensors under the unsplit model's state-dict keys, on the CPU."""
        sd = self.stage.state_dict()
        return {f: sd[key].detach().cpu() for key, fulls in self.key_map.items() for f in fulls}

    def named_full_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """This stage's parameters under the unsplit model's names."""
        return [(self.key_map[key][0], p) for key, p in self.stage.named_parameters()]

    def load_full_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load this stage's part of the unsplit model's state dict."""
        missing = [fulls[0] for fulls in self.key_map.values() if fulls[0] not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint of model {self.model_name!r} lacks {', '.join(missing[:5])}"
            )
        self.stage.load_state_dict({key: state[fulls[0]] for key, fulls in self.key_map.items()})

    def global_optimizer_state(self, local: dict[str, Any]) -> dict[str, Any]:
        """An optimizer state dict over this stage's parameters, indexed as over the whole
        model's (what one process's optimizer would write)."""
        if len(local["param_groups"]) != 1:
            raise ConfigError(
                f"parallel.mode pipeline: the optimizer of {self.model_name!r} has "
                f"{len(local['param_groups'])} parameter groups; one is supported"
            )
        state = {
            self.param_index[i]: {k: v.cpu() if isinstance(v, torch.Tensor) else v
                                  for k, v in s.items()}
            for i, s in local["state"].items()
        }  # fmt: skip
        group = {**local["param_groups"][0], "params": list(range(self.full_params))}
        return {"state": state, "param_groups": [group]}

    def local_optimizer_state(self, full: dict[str, Any]) -> dict[str, Any]:
        groups = full.get("param_groups", [])
        if len(groups) != 1 or len(groups[0]["params"]) != self.full_params:
            raise CheckpointError(
                f"the optimizer state of model {self.model_name!r} in the checkpoint does not "
                f"match its {self.full_params} parameters"
            )
        ids = groups[0]["params"]
        state = full.get("state", {})
        local_state = {i: state[ids[g]] for i, g in enumerate(self.param_index) if ids[g] in state}
        return {
            "state": local_state,
            "param_groups": [{**groups[0], "params": list(range(len(self.param_index)))}],
        }

    def extra_repr(self) -> str:
        start, stop = self.plan.bounds[self.stage_index]
        return (
            f"model={self.model_name!r}, stage={self.stage_index}/{self.stages}, "
            f"layers={start}-{stop - 1}, microbatches={self.microbatches}"
        )


class _PipelineCall(torch.autograd.Function):
    """A whole pipelined model call as one autograd node (forward and backward schedules)."""

    @staticmethod
    def forward(ctx: Any, module: PipelineModule, anchor: torch.Tensor, x: torch.Tensor) -> Any:
        sizes = _split_sizes(x.shape[0], module.microbatches)
        run = _Run(module._calls, sizes, x.requires_grad, tuple(x.shape), x.dtype)
        leaves = module._forward(x, run)
        ctx.module, ctx.run = module, run
        ctx.set_materialize_grads(False)  # an unused output costs no backward
        fixed = [t for t in leaves if not t.is_floating_point()]
        if fixed:
            ctx.mark_non_differentiable(*fixed)
        return tuple(leaves)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[None, None, torch.Tensor | None]:
        run, ctx.run = ctx.run, None
        if run is None:
            raise TrainingError("pipeline: a model call was backpropagated twice")
        return None, None, ctx.module._backward(run, list(grads))


def split_model(
    name: str,
    model: nn.Module,
    layers: list[nn.Module],
    plan: StagePlan,
    stage: int,
    links: Links,
    microbatches: int,
) -> PipelineModule:
    """This rank's PipelineModule of `model` (on the CPU, like the model); the other stages'
    layers are left to the garbage collector with the model."""
    full = model.state_dict(keep_vars=True)
    names_of: dict[int, list[str]] = {}
    for key, tensor in full.items():
        names_of.setdefault(id(tensor), []).append(key)
    owner: dict[int, int] = {}
    for s, (start, stop) in enumerate(plan.bounds):
        for layer in layers[start:stop]:
            for tensor in layer.state_dict(keep_vars=True).values():
                if owner.setdefault(id(tensor), s) != s:
                    raise ConfigError(
                        f"parallel.mode pipeline: model {name!r} shares "
                        f"{names_of.get(id(tensor), ['a tensor'])[0]} between stages "
                        f"{owner[id(tensor)]} and {s}; tied weights must stay in one stage"
                    )
    left_out = [keys[0] for i, keys in names_of.items() if i not in owner]
    if left_out:
        raise ConfigError(
            f"parallel.mode pipeline: {name!r}.pipeline_layers() leave out "
            f"{', '.join(left_out[:4])}; the layers must hold all of the model's tensors"
        )
    index = {id(p): i for i, p in enumerate(model.parameters())}
    module = PipelineModule(
        name, layers, plan, stage, links, microbatches,
        key_map={}, param_index=[], full_keys=list(full), full_params=len(index),
    )  # fmt: skip
    for key, tensor in module.stage.state_dict(keep_vars=True).items():
        module.key_map[key] = names_of[id(tensor)]
    module.param_index = [index[id(p)] for p in module.stage.parameters()]
    return module


# ---------------------------------------------------------------------------- the strategy


class PipelineStrategy(Strategy):
    """One stage of every model per process; all processes train one model replica."""

    name = "pipeline"
    model_parallel = True
    world_size = 1  # one replica: each step trains on one batch

    def __init__(self, cfg: ParallelConfig, world: World) -> None:
        if cfg.sync_batchnorm:
            raise ConfigError("parallel.sync_batchnorm has no meaning with parallel.mode pipeline")
        if cfg.lr_scaling != "none":  # one replica, one batch per step: nothing to scale for
            raise ConfigError("parallel.lr_scaling applies to allreduce, not to pipeline")
        self.cfg = cfg
        self.world = world
        self.rank = world.rank
        self.group_rank = world.rank  # a checkpoint's `ranks`: one entry per stage
        self.stages = world.size
        self.plans: dict[str, StagePlan] = {}
        self._device: torch.device | None = None
        self._links: Links | None = None
        self._vote = StopVote(world.comm, cfg.timeout_s) if self.stages > 1 else None

    @property
    def data_rank(self) -> tuple[int, int]:
        return 0, 1  # every stage sees the same batches (stage 0's input, the last's targets)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every stage's `obj` at rank 0 (checkpoints keep each stage's random streams, so a
        resumed stage draws the dropout masks it would have drawn)."""
        if self.stages == 1:
            return [obj]
        parts = self.world.comm.gather(obj, root=0)
        return parts if self.is_main else None

    def device(self, requested: str) -> torch.device:
        self._device = self.world.device(requested)
        return self._device

    def place_models(
        self, models: dict[str, nn.Module], device: torch.device
    ) -> dict[str, nn.Module]:
        wire = None
        if self.stages > 1:
            import torch.distributed as dist

            init_process_group(self.world.comm, device, self.cfg.timeout_s)
            if dist.get_backend() == "gloo":
                wire = torch.device("cpu")
        self._links = Links(self.rank, self.stages, device, self.cfg.timeout_s, wire)
        out: dict[str, nn.Module] = {}
        for name, model in models.items():
            layers = chain_of(name, model)
            plan = plan_stages(name, model, layers, self.stages, self.cfg.pipeline_split)
            if self.world.comm is not None:  # the cuts must agree, or messages would not match
                cuts = self.world.comm.allgather(plan.bounds)
                if any(c != plan.bounds for c in cuts):
                    raise ConfigError(f"pipeline: the ranks cut model {name!r} differently: {cuts}")
            self.plans[name] = plan
            module = split_model(
                name, model, layers, plan, self.rank, self._links, self.cfg.microbatches
            )
            out[name] = module.to(device)
        if self.is_main:
            for plan in self.plans.values():
                print(plan.table(), flush=True)
            print(
                f"pipeline: {self.stages} stages, {self.cfg.microbatches} micro-batches per "
                "batch (GPipe schedule)",
                flush=True,
            )
        return out

    def state_dicts(
        self, models: dict[str, nn.Module], optimizers: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Gathered on the main rank (collective: every rank calls it); others get empty."""
        model_states, optimizer_states = {}, {}
        for name, module in models.items():
            assert isinstance(module, PipelineModule)
            local = (module.local_state(), module.global_optimizer_state(
                optimizers[name].state_dict()) if name in optimizers else None)  # fmt: skip
            parts = self.world.comm.gather(local, root=0) if self.stages > 1 else [local]
            if not self.is_main:
                continue
            merged: dict[str, torch.Tensor] = {}
            for part, _ in parts:
                merged.update(part)
            model_states[name] = {k: merged[k] for k in module.full_keys if k in merged}
            if parts[0][1] is not None:
                state: dict[int, Any] = {}
                for _, opt in parts:
                    state.update(opt["state"])
                optimizer_states[name] = {
                    "state": dict(sorted(state.items())),
                    "param_groups": parts[0][1]["param_groups"],
                }
        return model_states, optimizer_states

    def load_state_dicts(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, Any],
        model_states: dict[str, Any],
        optimizer_states: dict[str, Any],
    ) -> None:
        for name, state in model_states.items():
            module = models[name]
            assert isinstance(module, PipelineModule)
            module.load_full_state(state)
            if name in optimizers and name in optimizer_states:
                optimizers[name].load_state_dict(
                    module.local_optimizer_state(optimizer_states[name])
                )

    def agree_stop(self, requested: bool) -> bool:
        return self._vote(requested) if self._vote is not None else requested

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.name,
            "rank": self.rank,
            "world_size": self.world.size,
            "stages": self.stages,
            "microbatches": self.cfg.microbatches,
            "schedule": "gpipe",
            "plans": {name: plan.describe() for name, plan in self.plans.items()},
            "world": self.world.describe(),
        }

    def close(self) -> None:
        if self._vote is not None:
            self._vote.close()
        if self.stages > 1:
            destroy_process_group()


def check_pipeline(models: dict[str, nn.Module], stages: int, split: str = "flops") -> None:
    """Before any process starts: every model can be cut into `stages` stages."""
    for name, model in models.items():
        plan_stages(name, model, chain_of(name, model), stages, split)
