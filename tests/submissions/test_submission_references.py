"""Every update rule implemented here, run side by side with a reference on the same model and batches
for 25 steps; the parameters must agree to floating-point tolerance.

References: the authors' own code where it is on PyPI (muon-optimizer, KellerJordan/Muon's release;
sophia-opt, Liuhong99/Sophia's sophia.py repackaged verbatim), pytorch-optimizer >= 4.1.0
(kozistr/pytorch_optimizer; earlier releases have fidelity bugs in AdaHessian, SophiaH, DiffGrad and
Muon), or the paper's pseudo-code or the official code's rule written out in this file, citing the
official file and lines. Submission-level tests drive the submission's own `update_params` on the toy
workload (in float64), so the estimators (sampled labels, probes, perturbations) are checked too.
"""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_optimizer
import torch
import torch.nn.functional as F
from torch import nn

from harness import spec
from harness.discovery import load_submission
from support import taken_train_loss
from harness.backends.torch.schedules import warmup_cosine_decay

STEPS = 25
TOLERANCE = {"rtol": 1e-9, "atol": 1e-11}  # float64


def lr_factors(step_hint: int, warmup_factor: float) -> list[float]:
    """The multipliers warmup_cosine_decay applies at steps 0..STEPS-1."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine_decay(optimizer, step_hint, warmup_factor)
    factors = []
    for _ in range(STEPS):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


def step_seed(step: int) -> int:
    return 1000 + step


def run_submission(name: str, workload: spec.Workload, point: dict) -> tuple[nn.Module, nn.Module, list[dict]]:
    """Run `name` for STEPS steps through its own init_optimizer_state/update_params on `workload`, in
    float64, seeding the global generator with step_seed(step) before each step. Returns the trained
    model, an untouched copy of the initial model and the batches."""
    submission = load_submission(name, "pytorch")
    hyperparameters = spec.make_hyperparameters(point)
    model, model_state = workload.init_model_fn(0)
    model.double()
    initial, _ = workload.init_model_fn(0)
    initial.double()
    optimizer_state = submission.init_optimizer_state(workload, model, model_state, hyperparameters, 0)
    queue = workload._build_input_queue(1, "train", "", 16)
    batches = []
    for step in range(STEPS):
        batch = next(queue)
        batch = {**batch, "inputs": batch["inputs"].double()}
        batches.append(batch)
        torch.manual_seed(step_seed(step))
        optimizer_state, model, model_state = submission.update_params(
            workload, model, workload.model_params_types, model_state, hyperparameters, batch, workload.loss_type,
            optimizer_state, [], step, step_seed(step),
        )
    return model, initial, batches


def assert_same_parameters(got: nn.Module, want: nn.Module) -> None:
    for (name, a), b in zip(got.named_parameters(), want.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), **TOLERANCE, msg=lambda m: f"{name}: {m}")


def clip_by_global_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    return [g * min(1.0, max_norm / (total + 1e-6)) for g in grads]


# ----- Sophia-G: Algorithm 3 of Liu et al. (2023) with the GNB estimator (Algorithm 2) -----

def test_sophia_g_matches_algorithm_3_with_gauss_newton_bartlett_estimates(toy_workload):
    # ρ is large so that most coordinates are not clipped and the curvature estimates shape the update.
    point = {"learning_rate": 0.05, "one_minus_beta1": 0.035, "beta2": 0.9, "rho": 20.0, "weight_decay": 0.1,
             "warmup_factor": 0.1, "grad_clip": 1.0, "label_smoothing": 0.0, "dropout_rate": 0.0}
    model, reference, batches = run_submission("sophia_g", toy_workload, point)
    params = list(reference.parameters())
    m = [torch.zeros_like(p) for p in params]
    h = [torch.zeros_like(p) for p in params]
    k, eps, beta1, beta2 = 10, 1e-15, 1 - point["one_minus_beta1"], point["beta2"]
    for t, (batch, factor) in enumerate(zip(batches, lr_factors(toy_workload.step_hint, point["warmup_factor"]))):
        lr = point["learning_rate"] * factor
        torch.manual_seed(step_seed(t))
        logits = reference(batch["inputs"])
        if t % k == 0:  # t mod k = 1 in the paper's 1-based count
            sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
            g_hat = torch.autograd.grad(F.cross_entropy(logits, sampled), params, retain_graph=True)
            g_hat = clip_by_global_norm(list(g_hat), point["grad_clip"])
            batch_size = len(batch["targets"])
            h = [beta2 * hi + (1 - beta2) * batch_size * gi * gi for hi, gi in zip(h, g_hat)]
        grads = clip_by_global_norm(list(torch.autograd.grad(F.cross_entropy(logits, batch["targets"]), params)),
                                    point["grad_clip"])
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                p.mul_(1 - lr * point["weight_decay"])
                m[i] = beta1 * m[i] + (1 - beta1) * g
                p.sub_(lr * torch.clamp(m[i] / torch.clamp(point["rho"] * h[i], min=eps), -1.0, 1.0))
    assert_same_parameters(model, reference)


def test_sophia_g_matches_the_official_sophia_g(toy_workload):
    """Against the official SophiaG, as sophia-opt 0.2.2 packages it (its sophia_opt/__init__.py is
    Liuhong99/Sophia sophia.py at 2fc52f2 byte for byte). The official optimizer keeps h as the average
    of ĝ⊙ĝ and divides by ρ·bs·h in `step(bs=...)` (sophia.py line 199); ours folds B into the estimate,
    B·ĝ⊙ĝ, so bs = B here. The loop is ours (Algorithm 3): refresh h at θ_t from the step's own forward
    pass, then step; the official training script refreshes after the step, at θ_{t+1} on the next batch
    (train_sophiag.py lines 406-421), a documented difference of the submission, not of the update."""
    import sophia_opt  # sophia-opt, in the dev extras
    point = {"learning_rate": 0.05, "one_minus_beta1": 0.035, "beta2": 0.9, "rho": 20.0, "weight_decay": 0.1,
             "warmup_factor": 0.1, "grad_clip": 1.0, "label_smoothing": 0.0, "dropout_rate": 0.0}
    model, reference, batches = run_submission("sophia_g", toy_workload, point)
    optimizer = sophia_opt.SophiaG(
        reference.parameters(), lr=point["learning_rate"], betas=(1 - point["one_minus_beta1"], point["beta2"]),
        rho=point["rho"], weight_decay=point["weight_decay"],
    )
    scheduler = warmup_cosine_decay(optimizer, toy_workload.step_hint, point["warmup_factor"])
    for t, batch in enumerate(batches):
        torch.manual_seed(step_seed(t))
        optimizer.zero_grad(set_to_none=True)
        logits = reference(batch["inputs"])
        if t % 10 == 0:
            sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
            F.cross_entropy(logits, sampled).backward(retain_graph=True)
            torch.nn.utils.clip_grad_norm_(reference.parameters(), point["grad_clip"])
            optimizer.update_hessian()
            optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(logits, batch["targets"]).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), point["grad_clip"])
        optimizer.step(bs=len(batch["targets"]))
        scheduler.step()
    assert_same_parameters(model, reference)


def test_sophia_h_differs_from_the_official_sophia_h_only_by_its_bias_correction(toy_workload):
    """The only official SophiaH (Liuhong99/Sophia sophia.py from 01af183 to c503211, removed in 195a786,
    May 2023; no package has it) steps by lr/(1 − β₁ᵗ)·sign(m)·min(|m|/(γ·max(h, 0) + 1e-12), 1) after
    θ ← θ(1 − lr·λ) (lines 368-392 at c503211), with h ← β₂h + (1 − β₂)ĥ (line 241). Liu et al. (2023),
    Algorithm 3, and this submission have no 1/(1 − β₁ᵗ). That rule, written out here, with and without
    the factor: ours is the rule without it, and the factor changes the result."""
    point = {"learning_rate": 0.02, "one_minus_beta1": 0.04, "beta2": 0.9, "rho": 20.0, "weight_decay": 0.1,
             "warmup_factor": 0.1, "grad_clip": 1.0, "label_smoothing": 0.0, "dropout_rate": 0.0}
    model, initial, batches = run_submission("sophia_h", toy_workload, point)
    beta1, beta2, gamma = 1 - point["one_minus_beta1"], point["beta2"], point["rho"]
    factors = lr_factors(toy_workload.step_hint, point["warmup_factor"])

    def official_rule(bias_correction: bool) -> nn.Module:
        reference = copy.deepcopy(initial)
        params = list(reference.parameters())
        m = [torch.zeros_like(p) for p in params]
        h = [torch.zeros_like(p) for p in params]
        for t, (batch, factor) in enumerate(zip(batches, factors), 1):
            lr = point["learning_rate"] * factor
            torch.manual_seed(step_seed(t - 1))
            loss = F.cross_entropy(reference(batch["inputs"]), batch["targets"])
            if (t - 1) % 10 == 0:  # a Hutchinson probe u ⊙ (∇²L u), u ~ N(0, I), drawn after the gradient
                grads = torch.autograd.grad(loss, params, create_graph=True)
                probes = [torch.randn_like(p) for p in params]
                estimates = [u * hu for u, hu in zip(probes, torch.autograd.grad(grads, params, probes))]
                h = [beta2 * hi + (1 - beta2) * e for hi, e in zip(h, estimates)]
                grads = [g.detach() for g in grads]
            else:
                grads = list(torch.autograd.grad(loss, params))
            grads = clip_by_global_norm(grads, point["grad_clip"])
            step_size = lr / (1 - beta1**t) if bias_correction else lr
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(params, grads)):
                    p.mul_(1 - lr * point["weight_decay"])
                    m[i] = beta1 * m[i] + (1 - beta1) * g
                    ratio = torch.clamp(m[i].abs() / (gamma * torch.clamp(h[i], min=0) + 1e-12), max=1.0)
                    p.sub_(step_size * m[i].sign() * ratio)
        return reference

    assert_same_parameters(model, official_rule(bias_correction=False))
    with pytest.raises(AssertionError):
        assert_same_parameters(model, official_rule(bias_correction=True))


# ----- Sophia-H: pytorch-optimizer's SophiaH -----

def test_sophia_h_matches_pytorch_optimizer_sophia_h(toy_workload):
    # ρ is large so that most coordinates are not clipped and the curvature estimates shape the update.
    point = {"learning_rate": 0.02, "one_minus_beta1": 0.04, "beta2": 0.9, "rho": 20.0, "weight_decay": 0.1,
             "warmup_factor": 0.1, "grad_clip": 1e9, "label_smoothing": 0.0, "dropout_rate": 0.0}
    model, reference, batches = run_submission("sophia_h", toy_workload, point)
    rho = point["rho"]
    # Ours: lr·clip(m / max(ρh, ε), 1) and θ(1 − lr λ); theirs: lr'·clip(m / max(h, ε'), p) and θ(1 − lr' λ'),
    # equal for lr' = lr/ρ, p = ρ, ε' = ε/ρ, λ' = λρ.
    optimizer = pytorch_optimizer.SophiaH(
        reference.parameters(), lr=point["learning_rate"] / rho, betas=(1 - point["one_minus_beta1"], point["beta2"]),
        weight_decay=point["weight_decay"] * rho, p=rho, update_period=10, hessian_distribution="gaussian",
        eps=1e-12 / rho, foreach=False,
    )
    scheduler = warmup_cosine_decay(optimizer, toy_workload.step_hint, point["warmup_factor"])
    for t, batch in enumerate(batches):
        torch.manual_seed(step_seed(t))
        optimizer.zero_grad()
        F.cross_entropy(reference(batch["inputs"]), batch["targets"]).backward(create_graph=True)
        optimizer.step()
        scheduler.step()
    assert_same_parameters(model, reference)


# ----- AdaHessian: pytorch-optimizer's AdaHessian, and Algorithm 1 of Yao et al. (2021) on a conv net -----

def test_adahessian_matches_pytorch_optimizer_adahessian(toy_workload):
    point = {"learning_rate": 0.1, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-3,
             "hessian_power": 0.5, "warmup_factor": 0.1, "label_smoothing": 0.0, "dropout_rate": 0.0}
    model, reference, batches = run_submission("adahessian", toy_workload, point)
    optimizer = pytorch_optimizer.AdaHessian(
        reference.parameters(), lr=point["learning_rate"], betas=(0.9, 0.999), weight_decay=point["weight_decay"],
        hessian_power=point["hessian_power"], hessian_distribution="rademacher", eps=1e-4, foreach=False,
    )
    scheduler = warmup_cosine_decay(optimizer, toy_workload.step_hint, point["warmup_factor"])
    for t, batch in enumerate(batches):
        torch.manual_seed(step_seed(t))
        optimizer.zero_grad()
        F.cross_entropy(reference(batch["inputs"]), batch["targets"]).backward(create_graph=True)
        optimizer.step()
        scheduler.step()
    assert_same_parameters(model, reference)


class TinyConvNet(nn.Module):
    """The toy workload's 4 features as a 1x2x2 image, a 2x2 convolution, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=2, padding=1)
        self.head = nn.Linear(3 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x.view(-1, 1, 2, 2))).flatten(1))


def test_adahessian_matches_algorithm_1_with_spatial_averaging_on_a_conv_net(toy_workload):
    class ConvToy(type(toy_workload)):
        def build_model(self) -> nn.Module:
            return TinyConvNet()

    workload = ConvToy(toy_workload.data_dir)
    point = {"learning_rate": 0.1, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-3,
             "hessian_power": 1.0, "warmup_factor": 0.1, "label_smoothing": 0.0, "dropout_rate": 0.0}
    model, reference, batches = run_submission("adahessian", workload, point)
    params = list(reference.parameters())
    beta1, beta2, eps, k = 0.9, 0.999, 1e-4, point["hessian_power"]
    gradients, diagonals = [], []  # histories: the paper writes m_t and v_t as weighted sums over them
    for t, (batch, factor) in enumerate(zip(batches, lr_factors(workload.step_hint, point["warmup_factor"])), 1):
        lr = point["learning_rate"] * factor
        torch.manual_seed(step_seed(t - 1))
        loss = F.cross_entropy(reference(batch["inputs"]), batch["targets"])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        z = [torch.randint_like(p, 0, 2) * 2.0 - 1.0 for p in params]
        hz = torch.autograd.grad(grads, params, grad_outputs=z)
        # Spatial averaging (Section 3.3): D^(s) is the mean of |D| over each convolution kernel's positions.
        diagonals.append([d.abs().mean(dim=(2, 3), keepdim=True).expand_as(d) if d.dim() == 4 else d.abs()
                          for d in (zi * hzi for zi, hzi in zip(z, hz))])
        gradients.append([g.detach() for g in grads])
        with torch.no_grad():
            for i, p in enumerate(params):
                m = (1 - beta1) * sum(beta1 ** (t - j) * gradients[j - 1][i] for j in range(1, t + 1)) / (1 - beta1**t)
                v = ((1 - beta2) * sum(beta2 ** (t - j) * diagonals[j - 1][i] ** 2 for j in range(1, t + 1))
                     / (1 - beta2**t)).sqrt() ** k
                p.sub_(lr * (m / (v + eps) + point["weight_decay"] * p))
    assert_same_parameters(model, reference)


# ----- MeZO: Algorithm 1 of Malladi et al. (2023) -----

def test_mezo_matches_algorithm_1(toy_workload):
    point = {"learning_rate": 1e-3, "epsilon": 1e-3, "weight_decay": 0.1}
    model, reference, batches = run_submission("mezo", toy_workload, point)
    params = list(reference.parameters())
    eps, lr = point["epsilon"], point["learning_rate"]

    def perturb(seed: int, scale: float) -> None:
        generator = torch.Generator().manual_seed(seed)
        for p in params:
            p.add_(scale * eps * torch.randn(p.shape, generator=generator, dtype=p.dtype))

    def loss(batch: dict) -> float:
        reference.eval()  # the official trainer's zo_forward evaluates without dropout
        return float(F.cross_entropy(reference(batch["inputs"]), batch["targets"]))

    with torch.no_grad():
        for t, batch in enumerate(batches):
            seed = step_seed(t)
            perturb(seed, 1.0)
            loss_plus = loss(batch)
            perturb(seed, -2.0)
            loss_minus = loss(batch)
            perturb(seed, 1.0)
            projected_grad = (loss_plus - loss_minus) / (2 * eps)
            generator = torch.Generator().manual_seed(seed)
            for (name, p) in reference.named_parameters():
                z = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                decay = point["weight_decay"] if not name.endswith("bias") else 0.0
                p.sub_(lr * (projected_grad * z + decay * p))
    torch.testing.assert_close(
        [p.detach() for p in model.parameters()], [p.detach() for p in reference.parameters()], rtol=1e-9, atol=1e-12
    )


def test_mezo_never_builds_a_graph_and_reports_its_training_loss(toy_workload):
    model, model_state = toy_workload.init_model_fn(0)
    submission = load_submission("mezo", "pytorch")
    optimizer_state = submission.init_optimizer_state(toy_workload, model, model_state, None, 0)
    batch = next(toy_workload._build_input_queue(1, "train", "", 16))
    submission.update_params(toy_workload, model, toy_workload.model_params_types, model_state, None, batch,
                             toy_workload.loss_type, optimizer_state, [], 0, 7)
    assert all(p.grad is None for p in model.parameters())
    assert math.isfinite(taken_train_loss(toy_workload))


# ----- Optimizers on a small conv + MLP model, against pytorch-optimizer -----

class SmallNet(nn.Module):
    """A 3x3 convolution (4-D weight), a hidden linear layer and a linear output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3)
        self.hidden = nn.Linear(4 * 4 * 4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(torch.tanh(self.conv(x)).flatten(1))))


def small_net_pair(dtype: torch.dtype) -> tuple[nn.Module, nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    ours = SmallNet().to(dtype)
    theirs = SmallNet().to(dtype)
    theirs.load_state_dict(ours.state_dict())
    batches = [(torch.randn(16, 1, 6, 6, dtype=dtype), torch.randint(0, 3, (16,))) for _ in range(STEPS)]
    return ours, theirs, batches


def train(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> None:
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_lion_matches_pytorch_optimizer_lion():
    from submissions.lion.torch import Lion

    ours, theirs, batches = small_net_pair(torch.float64)
    train(ours, Lion(ours.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5), batches)
    train(theirs, pytorch_optimizer.Lion(theirs.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5,
                                         foreach=False), batches)
    assert_same_parameters(ours, theirs)


def test_diffgrad_matches_algorithm_1():
    """diffGrad's Algorithm 1 (Dubey et al., 2020) with decoupled weight decay. The paper adds ε to the
    bias-corrected √v̂, the official code (and ours) to √v with the corrections in the step size; the two
    coincide at ε = 0. (pytorch-optimizer's DiffGrad adds 1e-15 under the square root, so it is no
    reference at this tolerance.)"""
    from submissions.diffgrad.torch import DiffGrad

    ours, theirs, batches = small_net_pair(torch.float64)
    lr, beta1, beta2, weight_decay = 1e-2, 0.9, 0.999, 0.1
    train(ours, DiffGrad(ours.parameters(), lr=lr, betas=(beta1, beta2), eps=0.0, weight_decay=weight_decay), batches)
    params = list(theirs.parameters())
    m, v, previous = ([torch.zeros_like(p) for p in params] for _ in range(3))
    for t, (x, y) in enumerate(batches, 1):
        grads = torch.autograd.grad(F.cross_entropy(theirs(x), y), params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
                friction = 1 / (1 + torch.exp(-(previous[i] - g).abs()))
                p.mul_(1 - lr * weight_decay)
                p.sub_(lr * friction * m_hat / v_hat.sqrt())
                previous[i] = g
    assert_same_parameters(ours, theirs)


class MuonNet(nn.Module):
    """Hidden tensors whose shape scale tells the rules apart: a 3x3 convolution with more outputs than
    in·k_h·k_w (16 > 9), a (3, 1) convolution, a linear layer with more rows than columns; then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(1, 16, kernel_size=3)
        self.tall = nn.Conv2d(16, 4, kernel_size=(3, 1))
        self.hidden = nn.Linear(4 * 2 * 4, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.tall(torch.tanh(self.wide(x))))
        return self.head(torch.tanh(self.hidden(x.flatten(1))))


def test_muon_matches_the_official_muon_package():
    """Against the authors' own release on PyPI, muon-optimizer 0.1.0 (KellerJordan/Muon's setup.py; its
    muon.py has the repository's `zeropower_via_newtonschulz5`, `muon_update` and `adam_update` verbatim).
    Its optimizer classes add the 2-D update of a 4-D kernel to the kernel without the reshape that
    commit c33a468 later added (a shape error), so the loop of `SingleDeviceMuonWithAuxAdam.step`
    (muon.py lines 258-284 at 857d1ad) is driven here with that reshape.

    The official shape scale is √max(1, size(-2)/size(-1)) of the unflattened gradient (muon.py line 40):
    1 for `wide` (3x3), √3 for `tall` ((3, 1) kernel), √2 for `hidden` (64 x 32). The flattened-matrix rule
    √max(1, out/(in·k_h·k_w)) gives 4/3 for `wide` and 1 for `tall`, and fails this test."""
    import muon  # muon-optimizer, in the dev extras
    from submissions.muon.torch import Muon

    torch.manual_seed(0)
    ours, theirs = MuonNet(), MuonNet()
    theirs.load_state_dict(ours.state_dict())
    batches = [(torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))) for _ in range(STEPS)]
    muon_lr, adam_lr, momentum, weight_decay, betas, eps = 0.02, 3e-3, 0.95, 0.01, (0.9, 0.95), 1e-10

    def hidden(model: MuonNet) -> list[nn.Parameter]:
        return [model.wide.weight, model.tall.weight, model.hidden.weight]

    def rest(model: MuonNet) -> list[nn.Parameter]:
        return [model.wide.bias, model.tall.bias, model.hidden.bias, *model.head.parameters()]

    train(ours, Muon([
        {"params": hidden(ours), "use_muon": True, "lr": muon_lr, "momentum": momentum, "weight_decay": weight_decay},
        {"params": rest(ours), "use_muon": False, "lr": adam_lr, "betas": betas, "eps": eps,
         "weight_decay": weight_decay},
    ]), batches)

    momentum_buffers = [torch.zeros_like(p) for p in hidden(theirs)]
    first, second = [torch.zeros_like(p) for p in rest(theirs)], [torch.zeros_like(p) for p in rest(theirs)]
    for step, (x, y) in enumerate(batches, 1):
        for p in theirs.parameters():
            p.grad = None
        F.cross_entropy(theirs(x), y).backward()
        with torch.no_grad():
            for p, buffer in zip(hidden(theirs), momentum_buffers):
                update = muon.muon_update(p.grad, buffer, beta=momentum)
                p.mul_(1 - muon_lr * weight_decay)
                p.add_(update.reshape(p.shape), alpha=-muon_lr)
            for p, m, v in zip(rest(theirs), first, second):
                p.mul_(1 - adam_lr * weight_decay)
                p.add_(muon.adam_update(p.grad, m, v, step, betas, eps), alpha=-adam_lr)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_muon_shape_scale_is_the_official_one():
    """The official factor, written out: √max(1, A/B) with (A, B) the last two sizes of the unflattened
    tensor (KellerJordan/Muon muon.py line 40): rows/cols for a matrix, k_h/k_w for a 4-D kernel."""
    from submissions.muon.torch import shape_scale

    assert shape_scale((64, 32)) == pytest.approx(math.sqrt(2.0))
    assert shape_scale((32, 64)) == 1.0
    assert shape_scale((64, 1, 3, 3)) == 1.0  # flattened (64, 9) would give √(64/9)
    assert shape_scale((256, 128, 1, 1)) == 1.0  # a 1x1 shortcut: flattened (256, 128) would give √2
    assert shape_scale((4, 16, 3, 1)) == pytest.approx(math.sqrt(3.0))
    assert shape_scale((64, 8, 3)) == pytest.approx(math.sqrt(64 / 24))  # 3-D: the (out, in·k) matrix, our choice


def test_muon_orthogonalises_hidden_matrices():
    from submissions.muon.torch import orthogonalize

    torch.manual_seed(0)
    for shape in [(8, 64), (64, 8), (4, 1, 3, 3)]:
        singular_values = torch.linalg.svdvals(orthogonalize(torch.randn(shape)).float().reshape(shape[0], -1))
        assert singular_values.min() > 0.5 and singular_values.max() < 1.3  # U S' Vᵀ with S' ≈ I


def test_soap_matches_pytorch_optimizer_soap():
    """In float32, where pytorch-optimizer's SOAP, like the official code (nikhilvyas/SOAP soap.py, which
    runs only on float32 parameters), decomposes in float32; with float64 parameters it would run eigh in
    float64 and we in float32."""
    from submissions.soap.torch import SOAP

    ours, theirs, batches = small_net_pair(torch.float32)
    train(ours, SOAP(ours.parameters(), lr=3e-3, betas=(0.95, 0.95), weight_decay=0.01, precondition_frequency=3),
          batches)
    train(theirs, pytorch_optimizer.SOAP(theirs.parameters(), lr=3e-3, betas=(0.95, 0.95), weight_decay=0.01,
                                         precondition_frequency=3), batches)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7)


def soap_two_steps(theta: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, lr: float, betas: tuple[float, float],
                   eps: float, weight_decay: float) -> torch.Tensor:
    """SOAP's first two steps on a matrix θ, written out in float64 except for the eigendecompositions,
    which the official code runs in float32 (nikhilvyas/SOAP soap.py lines 346-368: `m.data.float()`
    before eigh; its L and R are float32 from the start, line 234).

    Step 1 only sets L = (1 − β₂) g₁g₁ᵀ and R = (1 − β₂) g₁ᵀg₁ and their eigenvectors Q_L, Q_R in
    descending order of eigenvalue (lines 139-153). Step 2: m = (1 − β₁) g₂, v = (1 − β₂) (Q_Lᵀ g₂ Q_R)²,
    θ ← θ − lr·√(1 − β₂)/(1 − β₁)·Q_L (Q_Lᵀ m Q_R / (√v + ε)) Q_Rᵀ, then θ ← θ(1 − lr·λ) (lines 163-204)."""
    beta1, beta2 = betas
    theta, g1, g2 = theta.double(), g1.double(), g2.double()

    def eigenvectors_in_float32(statistic: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigh(statistic.float()).eigenvectors.flip(1).double()

    left = eigenvectors_in_float32((1 - beta2) * g1 @ g1.T)
    right = eigenvectors_in_float32((1 - beta2) * g1.T @ g1)
    m = (1 - beta1) * g2
    v = (1 - beta2) * (left.T @ g2 @ right) ** 2
    direction = left @ ((left.T @ m @ right) / (v.sqrt() + eps)) @ right.T
    theta = theta - lr * math.sqrt(1 - beta2) / (1 - beta1) * direction
    return theta * (1 - lr * weight_decay)


# θ moves by about 0.25 in these two steps; bfloat16 and float16 round θ, m and v at each step.
SOAP_DTYPE_TOLERANCE = {torch.float64: 1e-12, torch.bfloat16: 3e-2, torch.float16: 4e-3}


@pytest.mark.parametrize("dtype", list(SOAP_DTYPE_TOLERANCE), ids=str)
def test_soap_eigendecomposes_in_float32_as_the_official_code(dtype):
    """float64: the result is the float32-eigenbasis one to 1e-12 (a float64 eigh moves it by ~1e-5 here).
    bfloat16 and float16, which the official code cannot run (its float32 L and R reject their gradients)
    and for which torch has no CPU eigh or QR: SOAP steps, and agrees with the rule to their precision."""
    from submissions.soap.torch import SOAP

    generator = torch.Generator().manual_seed(0)
    theta, g1, g2 = (torch.randn(6, 5, generator=generator, dtype=torch.float64).to(dtype) for _ in range(3))
    lr, betas, eps, weight_decay = 0.1, (0.9, 0.95), 1e-8, 0.01
    p = nn.Parameter(theta.clone())
    optimizer = SOAP([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    for g in (g1, g2):
        p.grad = g.clone()
        optimizer.step()
    assert p.dtype == dtype
    expected = soap_two_steps(theta, g1, g2, lr, betas, eps, weight_decay)
    tolerance = SOAP_DTYPE_TOLERANCE[dtype]
    torch.testing.assert_close(p.detach().double(), expected, rtol=tolerance, atol=tolerance)


def test_soap_trains_a_bfloat16_network_through_its_eigenbasis_refreshes():
    """25 steps with a power iteration and QR every 3 (in float32, soap.py lines 388-421), on a conv kernel,
    matrices and biases in bfloat16: no error, finite parameters that all move, still in bfloat16."""
    from submissions.soap.torch import SOAP

    model, _, batches = small_net_pair(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    train(model, SOAP(model.parameters(), lr=3e-3, precondition_frequency=3), batches)
    for a, b in zip(model.parameters(), before):
        assert a.dtype == torch.bfloat16 and torch.isfinite(a).all() and not torch.equal(a, b)


def test_soap_leaves_the_parameters_unchanged_on_its_first_step():
    from submissions.soap.torch import SOAP

    ours, _, batches = small_net_pair(torch.float64)
    before = [p.detach().clone() for p in ours.parameters()]
    train(ours, SOAP(ours.parameters()), batches[:1])
    assert all(torch.equal(a, b) for a, b in zip(before, ours.parameters()))
