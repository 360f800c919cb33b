"""A 3DGAN split over N pipeline stages against the unsplit model, in one MPI job.

    mpiexec -n N python _pipeline_equivalence.py OUT.json

Every rank builds the same models (seed 0) and keeps its stage; rank 0 also keeps the whole
model as the reference. Compared: the GAN losses and every parameter's gradient of both
steps (the discriminator's loss over two passes, real and generated; the generator's loss
backpropagated through the discriminator into the generator), in eval mode, in training mode
with one micro-batch, and in training mode with micro-batches against the unsplit model run
micro-batch by micro-batch (batch norm normalizes each micro-batch by itself); then one
RMSprop step, the gathered checkpoint state (models and optimizers) against the unsplit
optimizer's, and loading it back. DEVICE=cuda runs it on the GPUs (ranks sharing one GPU
pass their tensors over Gloo through the host), with TF32 off to compare at float32.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F

from scaletrain.config import ParallelConfig
from scaletrain.models.small import build_tiny_3dgan
from scaletrain.models.threedgan import Discriminator
from scaletrain.parallel import World, make_strategy

BATCH, MICRO = 6, 3
DEVICE = os.environ.get("DEVICE", "cpu")


def build(full_discriminator: bool = False) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = build_tiny_3dgan(latent_size=16)
    if full_discriminator:  # the published discriminator's widths (dropout off: same masks)
        models["discriminator"] = Discriminator(dropout=0.0)
    return {name: m.to(DEVICE) for name, m in models.items()}


def gan_losses(models, z, real, *, per_micro: int = 0):
    """Both GAN losses as the task computes them (BCE + energy terms, two D passes); with
    `per_micro`, the unsplit model runs micro-batch by micro-batch (what GPipe does)."""
    G, D = models["generator"], models["discriminator"]

    def run(model, x):
        if not per_micro:
            return model(x)
        outs = [model(c) for c in torch.tensor_split(x, per_micro)]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(o) for o in zip(*outs, strict=True))
        return torch.cat(outs)

    fake = run(G, z)
    real_logit, real_ep = run(D, real)
    fake_logit, fake_ep = run(D, fake.detach())
    ones, zeros = torch.ones(BATCH, device=z.device), torch.zeros(BATCH, device=z.device)
    d_loss = (
        F.binary_cross_entropy_with_logits(real_logit, ones)
        + F.binary_cross_entropy_with_logits(fake_logit, zeros)
        + 0.1 * (real_ep - 1.0).abs().mean()
        + 0.1 * fake_ep.abs().mean()
    )
    logit, ep = run(D, fake)
    g_loss = (
        F.binary_cross_entropy_with_logits(logit, ones)
        + 0.1 * (ep - 2.0).abs().mean()
        + 1e-3 * fake.sum(dim=(1, 2, 3, 4)).mean()
    )
    return d_loss, g_loss


def grads_of(models, d_loss, g_loss, names) -> dict[str, torch.Tensor]:
    """Gradients of the D loss for D's parameters and of the G loss for G's (the task's
    steps: D frozen while G trains), keyed model/parameter."""
    out = {}
    D, G = models["discriminator"], models["generator"]
    D.zero_grad(), G.zero_grad()
    d_loss.backward(retain_graph=True)
    out.update({f"discriminator/{n}": p.grad.cpu() for n, p in names(D)})
    D.requires_grad_(False)
    G.zero_grad()
    g_loss.backward()
    D.requires_grad_(True)
    out.update({f"generator/{n}": p.grad.cpu() for n, p in names(G)})
    return out


def relative_diff(got: dict, ref: dict) -> float:
    """Largest gradient difference over the largest gradient, per model."""
    worst = 0.0
    for model in ("generator", "discriminator"):
        keys = [k for k in ref if k.startswith(model)]
        scale = max(float(ref[k].abs().max()) for k in keys)
        worst = max(worst, *(float((got[k] - ref[k]).abs().max()) / scale for k in keys))
    return worst


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    world = World.detect()
    out: dict = {"stages": world.size}
    for case, (full_d, train, micro) in {
        "eval": (False, False, MICRO),
        "train_one_microbatch": (False, True, 1),
        "train_microbatches": (False, True, MICRO),
        "published_discriminator": (True, False, MICRO),
    }.items():
        strategy = make_strategy(ParallelConfig(mode="pipeline", microbatches=micro), world)
        device = strategy.device(DEVICE)
        split = strategy.place_models(build(full_d), device)
        gen = torch.Generator().manual_seed(1)
        z = torch.randn(BATCH, 16, generator=gen).to(device)
        real = torch.rand(BATCH, 1, 25, 25, 25, generator=gen) * (
            torch.rand(BATCH, 1, 25, 25, 25, generator=gen) < 0.05
        )
        real = real.to(device)
        for m in split.values():
            m.train(train)
        d_loss, g_loss = gan_losses(split, z, real)
        mine = grads_of(split, d_loss, g_loss, lambda m: m.named_full_parameters())
        parts = world.comm.gather(mine, root=0)
        bounds = {n: p.bounds for n, p in strategy.plans.items()}
        if world.rank == 0:
            got = {k: v for part in parts for k, v in part.items()}
            out[case] = {"losses": [d_loss.item(), g_loss.item()], "bounds": bounds}
            # against the unsplit model on the whole batch, and run micro-batch by micro-batch
            for ref_name, per_micro in (("whole", 0), ("micro", micro)):
                reference = build(full_d)
                for m in reference.values():
                    m.train(train)
                ref_d, ref_g = gan_losses(reference, z, real, per_micro=per_micro)
                ref = grads_of(reference, ref_d, ref_g, lambda m: m.named_parameters())
                assert set(got) == set(ref), sorted(set(ref) ^ set(got))
                out[case][ref_name] = {
                    "losses": [ref_d.item(), ref_g.item()],
                    "grad_diff": relative_diff(got, ref),
                }
        if case == "eval":
            out_opt = check_checkpoint_state(world, strategy, split, z, real)
            if world.rank == 0:
                out["checkpoint"] = out_opt
        strategy.close()
    if world.rank == 0:
        with open(sys.argv[1], "w") as fh:
            json.dump(out, fh)


def check_checkpoint_state(world, strategy, split, z, real) -> dict:
    """One RMSprop step on both; the gathered state equals one process's, and loads back."""
    optimizers = {n: torch.optim.RMSprop(m.parameters(), lr=1e-3) for n, m in split.items()}
    for m in split.values():
        m.zero_grad()
    d_loss, g_loss = gan_losses(split, z, real)
    (d_loss + g_loss).backward()
    for o in optimizers.values():
        o.step()
    models, opts = strategy.state_dicts(split, optimizers)
    result: dict = {}
    if world.rank == 0:
        reference = build()
        for m in reference.values():
            m.eval()
        ref_opts = {n: torch.optim.RMSprop(m.parameters(), lr=1e-3) for n, m in reference.items()}
        rd, rg = gan_losses(reference, z, real, per_micro=MICRO)
        (rd + rg).backward()
        for o in ref_opts.values():
            o.step()
        model_diff, opt_diff = 0.0, 0.0
        for name, model in reference.items():
            sd = model.state_dict()
            assert list(models[name]) == list(sd), name  # same keys, same order
            diffs = [float((models[name][k].cpu() - sd[k].cpu()).abs().max().float()) for k in sd]
            model_diff = max(model_diff, *diffs)
            ref_state = ref_opts[name].state_dict()
            assert opts[name]["param_groups"] == ref_state["param_groups"], name
            assert set(opts[name]["state"]) == set(ref_state["state"]), name
            for i, s in ref_state["state"].items():
                for k, v in s.items():
                    theirs = opts[name]["state"][i][k].cpu()
                    opt_diff = max(opt_diff, float((theirs - v.cpu()).abs().max()))
            # the single process loads the gathered state as its own
            model.load_state_dict(models[name])
            ref_opts[name].load_state_dict(opts[name])
        result = {"model_max_diff": model_diff, "optimizer_max_diff": opt_diff}
    # and every stage loads its part back from the whole state
    models, opts = world.comm.bcast((models, opts) if world.rank == 0 else None, root=0)
    before = [p.detach().clone() for m in split.values() for p in m.parameters()]
    for m in split.values():
        for p in m.parameters():
            p.data.add_(1.0)
    strategy.load_state_dicts(split, optimizers, models, opts)
    after = [p.detach() for m in split.values() for p in m.parameters()]
    reloaded = max(float((a - b).abs().max()) for a, b in zip(before, after, strict=True))
    states = [s for o in optimizers.values() for s in o.state_dict()["state"].values()]
    steps = [float(s["step"]) for s in states]
    reloaded = world.comm.allreduce(reloaded, op=__import__("mpi4py").MPI.MAX)
    if world.rank == 0:
        result.update({"reload_max_diff": reloaded, "steps": sorted(set(steps))})
    return result


if __name__ == "__main__":
    main()
