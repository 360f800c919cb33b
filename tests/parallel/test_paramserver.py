import json
import shutil
from pathlib import Path

import pytest
import torch
from _mpi import mpirun, run_driver
from torch import nn

from scaletrain.parallel.flatstate import FlatState
from scaletrain.parallel.rules import Downpour, Easgd, Gem
from scaletrain.parallel.shm import has_room
from scaletrain.train.checkpoint import load_checkpoint


def test_downpour_adds_the_update_and_the_worker_continues_from_the_centre():
    rule, central = Downpour(), torch.tensor([1.0, 2.0])
    # the worker pulled [0.5, 2.5] and trained to [1.5, 1.0]: its update is [1.0, -1.5]
    local, reply = torch.tensor([1.5, 1.0]), torch.tensor([0.5, 2.5])
    rule.apply(central, 0, local, reply)
    assert central.tolist() == [2.0, 0.5]
    assert reply.tolist() == central.tolist()  # the reply is the new centre
    rule.merge(local, reply)
    assert local.tolist() == central.tolist()


def test_downpour_works_block_by_block_over_a_vector_of_several_blocks():
    from scaletrain.parallel.rules import BLOCK

    torch.manual_seed(0)
    central, sent, reply = (torch.randn(2 * BLOCK + 3) for _ in range(3))
    expected = central + (sent - reply)
    Downpour().apply(central, 0, sent, reply)
    assert torch.equal(central, expected) and torch.equal(reply, expected)


def test_downpour_with_a_master_optimizer_steps_the_centre_with_each_update():
    """parallel.master_optim: the worker's update, negated, is the master optimizer's
    gradient. SGD at lr 1 without momentum is the plain addition; Adam's first step moves
    every parameter by lr towards the update."""
    torch.manual_seed(0)
    start = torch.randn(300)
    plain, sgd = Downpour(), Downpour(lambda params: torch.optim.SGD(params, lr=1.0))
    centres = {"plain": start.clone(), "sgd": start.clone()}
    replies = {(name, c): start.clone() for name in centres for c in (0, 1)}
    for i in range(6):  # two workers, their updates from their own last replies
        c, update = i % 2, 0.1 * torch.randn(300)
        for name, rule in (("plain", plain), ("sgd", sgd)):
            reply = replies[name, c]
            rule.apply(centres[name], c, reply + update, reply)
            assert torch.equal(reply, centres[name])  # the reply is the new centre
    assert torch.allclose(centres["sgd"], centres["plain"], atol=1e-6)
    assert not torch.allclose(centres["plain"], start, atol=0.1)  # they moved

    adam = Downpour(lambda params: torch.optim.Adam(params, lr=0.01))
    centre, reply, update = start.clone(), start.clone(), torch.randn(300)
    adam.apply(centre, 0, start + update, reply)
    torch.testing.assert_close(centre - start, 0.01 * update.sign(), rtol=0, atol=1e-5)
    assert torch.equal(reply, centre)


@pytest.mark.parametrize("mode", ["easgd", "gem", "allreduce", "none"])
def test_a_master_optimizer_is_refused_outside_downpour(mode):
    from scaletrain.config import OptimConfig, ParallelConfig
    from scaletrain.errors import ConfigError
    from scaletrain.parallel import World, make_strategy

    cfg = ParallelConfig(mode=mode, master_optim=OptimConfig(name="adam"))
    with pytest.raises(ConfigError, match=f"master_optim is for --mode downpour.*not {mode}"):
        make_strategy(cfg, World())


@pytest.mark.parametrize("mode", ["downpour", "easgd", "gem"])
@pytest.mark.parametrize("setting", ["lr_scaling=linear", "warmup_epochs=2"])
def test_lr_scaling_is_refused_where_a_worker_is_one_process(mode, setting):
    from scaletrain.config import ParallelConfig, apply_override, from_dict
    from scaletrain.errors import ConfigError
    from scaletrain.parallel import make_layout

    raw = {"parallel": {"mode": mode}}
    apply_override(raw, f"parallel.{setting}")
    cfg = from_dict(raw).parallel
    with pytest.raises(ConfigError, match=f"under --mode {mode} each worker here is one"):
        make_layout(cfg, 3)
    # a worker of two all-reducing processes scales with them
    cfg.workers = 2
    assert make_layout(cfg, 5).gpus == 2
    assert make_layout(ParallelConfig(mode=mode), 3).workers == 2


@pytest.mark.parametrize(
    ("optim", "momentum", "not_sgd"),
    [
        ({"name": "sgd", "momentum": 0.9}, True, False),
        ({"name": "rmsprop", "momentum": 0.5}, True, True),
        ({"name": "sgd"}, False, False),
        ({"name": "rmsprop"}, False, True),  # the 3DGAN's: plain SGD cannot train it
    ],
)
def test_gem_warns_of_workers_with_their_own_momentum_or_not_sgd(optim, momentum, not_sgd):
    from scaletrain.config import from_dict
    from scaletrain.parallel import advice

    notes = advice(from_dict({"parallel": {"mode": "gem"}, "optim": optim}))
    assert any("--set optim.momentum=0" in n for n in notes) is momentum
    assert any("derived for workers that step plain SGD" in n for n in notes) is not_sgd
    assert len(notes) == momentum + not_sgd
    assert advice(from_dict({"parallel": {"mode": "easgd"}, "optim": optim})) == []


@pytest.mark.parametrize("rule", [Downpour(), Easgd(alpha=0.25), None])
def test_a_worker_refills_its_payload_and_spare_block_by_block(rule):
    """Over 2 blocks + 3 floats the payload and the spare get the weights plus the reply's
    correction (or the weights alone), as the whole-vector expression does; floats past `n`
    (buffers) are left alone."""
    from scaletrain.parallel.rules import BLOCK, refill

    torch.manual_seed(0)
    n = 2 * BLOCK + 3
    local, reply, sent = (torch.randn(n + 2) for _ in range(3))
    spare = torch.zeros(n + 2)
    expected = local.clone()
    if rule is not None:
        rule.fold(local[:n], reply[:n], sent[:n], out=expected[:n])
    tail = sent[n:].clone()
    refill(rule, local, reply, sent, spare, n)
    assert torch.equal(sent[:n], expected[:n]) and torch.equal(spare[:n], expected[:n])
    assert torch.equal(sent[n:], tail) and spare[n:].eq(0).all()


def test_easgd_moves_worker_and_centre_towards_each_other_keeping_their_sum():
    rule = Easgd(alpha=0.25)
    local, central, reply = torch.tensor([4.0]), torch.tensor([0.0]), torch.tensor([7.0])
    rule.apply(central, 0, local, reply)
    assert reply.item() == 0.0  # easgd replies with the centre before its move
    rule.merge(local, reply)
    assert central.item() == 1.0 and local.item() == 3.0


def test_gem_rescales_updates_to_the_energy_of_a_momentum_proxy():
    rule = Gem(momentum=0.5, kappa=1.0)
    central, u = torch.zeros(3), torch.tensor([1.0, -2.0, 0.0])
    # first update: the proxy is the update itself and the centre has not moved: pi = kappa
    assert rule.scale(central, 0, u).tolist() == [1.0, 1.0, 0.0]
    # meanwhile another worker moved the centre by 0.5 in every coordinate
    central += 0.5
    pi = rule.scale(central, 0, u)  # proxy 1.5 u; pi = (1.5 |u| - 0.5) / |u|
    assert torch.allclose(pi[:2], torch.tensor([1.0, 1.25]))
    assert pi[2] == 0.0  # no update, no energy: clipped at zero


def test_gem_never_amplifies_beyond_its_clip():
    rule = Gem(momentum=0.99, kappa=10.0)
    central, reply = torch.zeros(2), torch.zeros(2)
    for _ in range(20):
        rule.apply(central, 0, reply + 1.0, reply)  # an update of ones from the last reply
    assert rule.last_scale == 5.0


def test_gem_compiled_into_one_loop_updates_as_the_plain_rule():
    plain, fused = Gem(momentum=0.9, kappa=2.0), Gem(momentum=0.9, kappa=2.0)
    failed = fused.fuse(1000)
    if shutil.which("c++") or shutil.which("g++"):  # it compiles where a compiler is at hand
        assert failed is None and fused._fused is not None
    else:  # elsewhere the plain rule stays, and the comparison below holds all the same
        assert failed is not None and fused._fused is None
    torch.manual_seed(0)
    start = torch.randn(1000)
    a, b = start.clone(), start.clone()
    replies = {(rule, c): start.clone() for rule in ("plain", "fused") for c in (0, 1)}
    for i in range(8):  # two workers, each update rescaled by its own proxy
        c, update = i % 2, 0.1 * torch.randn(1000)
        plain.apply(a, c, replies["plain", c] + update, replies["plain", c])
        fused.apply(b, c, replies["fused", c] + update, replies["fused", c])
        assert fused.last_scale == pytest.approx(plain.last_scale, rel=1e-5)
        assert torch.equal(replies["plain", c], a) and torch.equal(replies["fused", c], b)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for client in (0, 1):
        assert torch.allclose(plain._seen[client], fused._seen[client], rtol=1e-5, atol=1e-6)
        assert torch.allclose(plain._proxy[client], fused._proxy[client], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("user_setting", [None, False])
def test_gem_compiles_unchecked_then_with_inductors_instruction_check(monkeypatch, user_setting):
    """The first compile trusts the CPU's instruction list; one that fails is compiled again
    with inductor's check (a compiler too old for the newest instructions), not given up.
    A setting of the user's is kept, and compiled with once."""
    import torch._inductor.config as inductor_config
    from torch._inductor import cpu_vec_isa

    from scaletrain.parallel import rules

    seen = []

    def compile_(fn, **_):
        def compiled(*args):
            seen.append(inductor_config.cpp.vec_isa_ok)
            if inductor_config.cpp.vec_isa_ok:  # instructions this compiler cannot build
                raise RuntimeError("C++ compile error")
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    cpu_vec_isa.valid_vec_isa_list()  # cached for the process
    rule = rules.Gem()
    with inductor_config.patch({"cpp.vec_isa_ok": user_setting}):
        assert rule.fuse(100) is None and rule._fused is not None
    if user_setting is None:
        assert seen == [True, None, None]  # the failed call, then the two good ones
        # the list made without the check is not kept for later compiles
        assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize == 0
    else:
        assert seen == [False, False]


def test_flat_state_makes_parameters_and_buffers_views_of_one_vector():
    models = {"b": nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), "a": nn.Linear(2, 1)}
    state = FlatState(models)
    n_params = sum(p.numel() for m in models.values() for p in m.parameters())
    assert state.n_params == n_params
    assert state.flat.numel() == n_params + 2 + 2  # running mean and variance
    state.flat.zero_()
    assert all(float(p.detach().abs().sum()) == 0 for m in models.values() for p in m.parameters())
    assert float(models["b"][1].running_var.sum()) == 0  # buffers are views too
    state.flat[0] = 7.0  # model "a" comes first (sorted names)
    assert models["a"].weight.flatten()[0].item() == 7.0


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_gan_trains_under_downpour_and_a_silent_worker_is_named(
    tiny_gan_config, class_overrides, tmp_path
):
    gan = tiny_gan_config(
        f"run.dir={tmp_path / 'gan'}",
        "train.epochs=1",
        "run.device=cpu",
        "data.max_showers=64",
        "train.batch_size=8",
    )
    hang = class_overrides(
        "hang", "parallel.mode=downpour", "parallel.timeout_s=3",
        "parallel.on_worker_loss=abort", "train.epochs=1",
    )  # fmt: skip
    runs = [
        {"name": "gan", "config": gan.to_dict(), "overrides": ["parallel.mode=downpour"]},
        {"name": "hang", "overrides": hang, "hang": {"rank": 2, "step": 5}},
    ]
    results, _, proc = run_driver(3, runs, tmp_path / "job", timeout=180)
    # both GAN models travel in one buffer; the master validates and checkpoints them
    metrics = results["gan"]["metrics"]
    assert "val/loss" in metrics and metrics["ps/updates"] > 0, proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "gan" / "best.pt")
    assert set(state["models"]) == {"generator", "discriminator"}
    rows = [json.loads(x) for x in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert any("ps/staleness_mean" in r for r in rows)
    # the share of the epoch the master spent on updates: some, never more than all of it
    assert 0.0 < metrics["ps/master_busy"] <= 1.0
    # and the share of their time the workers' training threads spent on exchanges
    assert 0.0 < metrics["ps/worker_exchange"] < 1.0
    # the master does not hang: it names the rank that went silent, and the job stops
    assert "no message from rank 2" in results["hang"]["error"]
    assert proc.returncode != 0


@pytest.mark.mpi
@pytest.mark.timeout(450)
def test_with_one_worker_an_overlapped_run_keeps_the_batch_norm_statistics(
    tiny_gan_config, tmp_path
):
    """One master + one worker: overlapping the exchanges changes nothing but rounding, so the
    central model ends with the same batch-norm running statistics either way (a worker that
    took the statistics of the reply reset its own to an earlier send's). How the exchange
    thread waits for the reply (parallel.reply_wait) changes nothing at all."""
    runs = []
    for overlap in ("true", "false", "sleep"):
        cfg = tiny_gan_config(
            f"run.dir={tmp_path / overlap}",
            "train.epochs=1",
            "run.device=cpu",
            "data.max_showers=80",
            "train.batch_size=8",
            "run.threads=1",
        )
        runs.append(
            {
                "name": overlap,
                "config": cfg.to_dict(),
                "overrides": [
                    "parallel.mode=downpour",
                    "parallel.sync_every=1",
                    f"parallel.overlap={overlap != 'false'}",
                    f"parallel.reply_wait={'sleep' if overlap == 'sleep' else 'spin'}",
                ],
            }
        )
    # 37-61 s on 2 idle cores (the slowest test here): room for a slow machine
    _, _, proc = run_driver(2, runs, tmp_path / "job", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [load_checkpoint(tmp_path / name / "best.pt")["models"] for name in ("true", "false")]
    slept = load_checkpoint(tmp_path / "sleep" / "best.pt")["models"]
    for model, state in states[0].items():
        for key, value in state.items():
            assert torch.equal(slept[model][key], value), f"{model}.{key}"
    stats = [
        {f"{m}.{k}": v for m, sd in s.items() for k, v in sd.items() if "running" in k}
        for s in states
    ]
    assert stats[0], "the tiny 3DGAN has batch norm"
    for key, value in stats[1].items():
        init = 0.0 if key.endswith("running_mean") else 1.0  # PyTorch's initial statistics
        assert not torch.allclose(value, torch.full_like(value, init)), key  # they moved
        # overlap reorders the sums: up to 7e-6 apart here; taking a reply's statistics
        # moved them by 0.07, their own size
        assert torch.allclose(stats[0][key], value, rtol=1e-3, atol=1e-4), key


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_a_reply_folded_in_on_the_exchange_thread_ends_where_one_folded_in_at_once_ends(
    class_overrides, tmp_path
):
    """EASGD, one worker, a linear model under a linear loss: a gradient does not depend on
    the weights it is computed at, so folding each elastic pull in one step late, on the
    exchange thread, into the spare copy of the weights the optimizer then steps (overlap, on
    the CPU) must end where folding it in at once (no overlap) ends."""
    runs = []
    for overlap in ("true", "false"):
        name = f"overlap-{overlap}"
        overrides = class_overrides(
            name, "parallel.mode=easgd", "parallel.easgd_tau=1", "parallel.easgd_alpha=0.3",
            f"parallel.overlap={overlap}", "model.args={in_features: 32, hidden: []}",
            "supervised.loss=_losses:mean_logit", "train.epochs=2",
            "train.best_metric=val/loss", "train.best_mode=min",
        )  # fmt: skip
        runs.append({"name": name, "overrides": overrides})
    results, _, proc = run_driver(2, runs, tmp_path / "job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["overlap-true"]["metrics"]["ps/updates"] > 20
    late, at_once = (
        load_checkpoint(tmp_path / f"overlap-{o}" / "best.pt")["models"]["model"]
        for o in ("true", "false")
    )
    # (adding only half of each pull on the exchange thread fails this)
    for key, value in at_once.items():
        assert torch.allclose(late[key], value, rtol=1e-4, atol=1e-5), key


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_a_parameter_server_run_resumes_like_an_uninterrupted_one(class_overrides, tmp_path):
    """1 master + 1 worker waiting for each reply (every exchange deterministic), SGD with
    momentum: 3 epochs at once, or 2 and then --resume to 3, end with the same weights and
    the same best epoch, for downpour, GEM (its proxies in the checkpoint) and downpour with
    a master Adam (its moments in the checkpoint); the worker's momentum and random streams
    come from its own file."""
    variants = {
        "downpour": ["parallel.mode=downpour"],
        "gem": ["parallel.mode=gem"],
        "adam": ["parallel.mode=downpour", "parallel.master_optim.name=adam"],
    }
    runs = []
    for name, mode in variants.items():
        common = [*mode, "parallel.overlap=false"]
        part = class_overrides(f"{name}-part", *common, "train.epochs=2")
        runs += [
            {"name": f"{name}-full", "overrides": class_overrides(f"{name}-full", *common)},
            {"name": f"{name}-part", "overrides": part},
            {"name": f"{name}-resumed", "overrides": [*part, "train.epochs=3"], "resume": True},
        ]
    # nothing left to train: the master and the worker start and stop cleanly
    runs.append({**runs[2], "name": "downpour-again"})
    for run in runs:
        if "-part" not in run["name"]:
            run["overrides"] = [*run["overrides"], "train.epochs=3"]
    results, checksums, proc = run_driver(2, runs, tmp_path / "job", timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in variants:
        full, part, resumed = (results[f"{name}-{r}"] for r in ("full", "part", "resumed"))
        assert part["steps"] == 2 * full["steps"] // 3 and resumed["steps"] == full["steps"]
        assert resumed["best"] == full["best"], name
        for rank in (0, 1):  # master and worker end with the same weights, resumed or not
            assert checksums[rank][f"{name}-resumed"] == checksums[rank][f"{name}-full"], name
    for rank in (0, 1):
        assert checksums[rank]["downpour-again"] == checksums[rank]["downpour-full"]


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_client_and_its_server_share_a_slot_unless_off_or_out_of_room(tmp_path):
    out = tmp_path / "seen.json"
    proc = mpirun(2, [str(Path(__file__).with_name("_shm_check.py")), str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    server, client = json.loads(out.read_text())
    assert server["payload"] == [0.0, 1.0, 2.0, 3.0, 4.0]  # written by the client
    assert client["reply"] == [0.0, 2.0, 4.0, 6.0, 8.0]  # written by the server
    for seen in (server, client):  # both sides agree whether there is a slot
        assert (seen["on"], seen["off"], seen["full"]) == (True, False, False)


def test_room_for_shared_memory_is_judged_by_the_free_space(tmp_path):
    assert has_room(1, str(tmp_path)) and not has_room(1 << 62, str(tmp_path))
    assert has_room(1 << 62, str(tmp_path / "absent"))  # no such directory, no such limit


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_shared_memory_and_messages_carry_the_same_exchanges(class_overrides, tmp_path):
    """GEM, one worker (every exchange deterministic): through shared memory (the default
    on one node) and through messages the training ends with the same weights."""
    runs = []
    for shared in ("true", "false"):
        overrides = class_overrides(
            f"shm-{shared}", "parallel.mode=gem", f"parallel.shared_memory={shared}",
            "train.epochs=2",
        )  # fmt: skip
        runs.append({"name": f"shm-{shared}", "overrides": overrides})
    results, _, proc = run_driver(2, runs, tmp_path / "job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["shm-true"]["metrics"]["ps/updates"] > 20
    for shared, clients in (("true", [1]), ("false", [])):
        world = json.loads((tmp_path / f"shm-{shared}" / "provenance.json").read_text())["world"]
        assert world["shared_memory"] == clients
    slot, message = (
        load_checkpoint(tmp_path / f"shm-{s}" / "best.pt")["models"]["model"]
        for s in ("true", "false")
    )
    for key, value in message.items():
        assert torch.equal(slot[key], value), key


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_sub_masters_aggregate_their_workers_under_a_top_master(class_overrides, tmp_path):
    overrides = class_overrides(
        "sub", "parallel.mode=downpour", "parallel.masters=2", "parallel.sync_every=2",
        "train.epochs=4",
    )  # fmt: skip
    results, _, proc = run_driver(5, [{"name": "sub", "overrides": overrides}], tmp_path / "job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["sub"]["best"]["value"] > 0.85
    assert results["sub"]["metrics"]["ps/updates"] > 0
    # the top master's clients are sub-masters, whose time is not a worker's
    assert "ps/worker_exchange" not in results["sub"]["metrics"]


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_seven_processes_hybrid_workers_and_a_gan_under_gem_sub_masters(
    tiny_gan_config, class_overrides, tmp_path
):
    """Seven processes, two layouts: downpour with 1 master + 3 workers of 2 processes each (each
    worker all-reduces its own gradients, its lead exchanges with the master; rank 4's loss turns
    NaN once and its worker skips that update on both of its ranks), and GEM with a top
    master, 2 sub-masters and 4 workers training both models of a GAN."""
    hybrid = class_overrides(
        "hybrid", "parallel.mode=downpour", "parallel.workers=3", "train.epochs=5",
        "train.on_nonfinite=skip", "parallel.sync_every=1",
    )  # fmt: skip
    gan = tiny_gan_config(
        f"run.dir={tmp_path / 'gan'}", "train.epochs=1", "run.device=cpu", "run.threads=1",
        "data.max_showers=160", "parallel.mode=gem", "parallel.masters=2",
    )  # fmt: skip
    runs = [
        {"name": "hybrid", "overrides": hybrid, "poison": {"rank": 4, "step": 5}},
        {"name": "gan", "config": gan.to_dict()},
    ]
    results, checksums, proc = run_driver(7, runs, tmp_path / "job", timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    world = json.loads((tmp_path / "hybrid" / "provenance.json").read_text())["world"]
    assert world["layout"]["gpus"] == 2 and world["layout"]["workers"] == 3, world
    assert results["hybrid"]["best"]["value"] > 0.85
    # the two processes of each worker end on the same weights (workers themselves may end
    # alike: a last exchange with nothing new to send brings back the central weights as they are)
    replicas = [checksums[r]["hybrid"] for r in range(1, 7)]
    assert replicas[0::2] == replicas[1::2]
    # ...and are three replicas, each exchanging all along: the master took an update per step
    # (sync_every 1) from each, and from a worker that finished first its last (DONE) one too
    taken = results["hybrid"]["metrics"]
    low, high = taken["ps/client_updates_min"], taken["ps/client_updates_max"]
    assert low == results["hybrid"]["steps"] > 0 and high - low <= 1, (taken, results["hybrid"])
    # a worker's non-finite losses are logged beside its own state, by each of its ranks
    logs = sorted((tmp_path / "hybrid" / "ranks").glob("nonfinite.*.log"))
    assert [p.name for p in logs] == ["nonfinite.rank3.log", "nonfinite.rank4.log"]
    lead, poisoned = (p.read_text().splitlines() for p in logs)
    assert len(lead) == 1 and "on another rank" in lead[0], lead
    assert poisoned == ["epoch 0, batch 5, model loss = nan"], poisoned
    metrics = results["gan"]["metrics"]
    assert metrics["ps/updates"] > 0
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("val/d_loss", "val/g_loss"))
    state = load_checkpoint(tmp_path / "gan" / "best.pt")
    assert set(state["models"]) == {"generator", "discriminator"}


@pytest.mark.parametrize("rule", [Downpour(), Easgd(alpha=0.25), Gem()])
@pytest.mark.parametrize("into", ["local", "sent", "other"])
def test_an_overlapped_exchange_keeps_the_steps_trained_while_it_travelled(rule, into):
    """Folding the reply into weights trained on after sending equals merging at send time
    and then training the same steps, whether the result overwrites the weights, the sent
    vector (both read before written) or goes elsewhere."""
    sent, reply = torch.tensor([4.0, -1.0, 3.0]), torch.tensor([1.0, 2.0, -2.0])
    trained = torch.tensor([0.5, -0.25, 0.125])  # the steps taken while the reply travelled
    at_send = sent.clone()
    rule.merge(at_send, reply)
    local = sent + trained
    out = {"local": local, "sent": sent, "other": torch.zeros(3)}[into]
    rule.fold(local, reply, sent, out=out)
    assert torch.allclose(out, at_send + trained)


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_a_worker_slow_to_its_first_update_is_waited_for(class_overrides, tmp_path):
    """A worker's first steps may compile for minutes: the master allows them
    parallel.startup_timeout_s, and only then applies parallel.timeout_s."""
    common = ["parallel.mode=downpour", "parallel.timeout_s=2", "parallel.on_worker_loss=abort",
              "train.epochs=1"]  # fmt: skip
    slow_first = {"rank": 2, "step": 1, "seconds": 6}
    runs = [
        {"name": "grace", "overrides": class_overrides("grace", *common), "hang": slow_first},
        {
            "name": "no-grace",
            "overrides": class_overrides("nograce", *common, "parallel.startup_timeout_s=2"),
            "hang": slow_first,
        },
    ]
    results, _, proc = run_driver(3, runs, tmp_path / "job", timeout=180)
    assert "grace" in results, proc.stderr[-3000:]
    assert "error" not in results["grace"], results["grace"]
    assert results["grace"]["metrics"]["ps/updates"] > 0
    error = results["no-grace"]["error"]
    assert "no first update from rank 2 within 2 s (parallel.startup_timeout_s)" in error, error


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_an_exchange_thread_waiting_for_a_silent_server_can_be_woken(tmp_path):
    """A worker that gave up on its server (in a study, the next trial goes on) stops its
    exchange thread's wait instead of leaving it in MPI for good."""
    out = tmp_path / "seen.json"
    proc = mpirun(2, [str(Path(__file__).with_name("_wake_check.py")), str(out)])
    seen = json.loads(out.read_text())
    assert proc.returncode == 0, (seen, proc.stderr[-3000:])
    assert seen["answered"] == 3.0  # an answered exchange goes through the same wait
    for wait in ("spin", "sleep"):
        assert seen[f"{wait} waiting"], seen
        assert "exchange with parameter server rank 0 abandoned" in seen[f"{wait} woken"], seen
