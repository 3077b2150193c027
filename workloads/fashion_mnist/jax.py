"""Fashion-MNIST with the small ResNet of `torch.py` in Flax Linen: the same layers, shapes and
initial distributions (torch's defaults: convolution and dense kernels U(±1/√fan_in), dense biases
likewise, BatchNorm scale 1 and bias 0, momentum 0.1, ε 1e-5). Images arrive as (N, 1, 28, 28), as
for torch, and are laid out NHWC inside the model.

    python submit.py --framework jax --workload fashion_mnist --submission nadamw
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from harness.backends.jax.layers import TORCH_KERNEL_INIT, torch_bias_init
from harness.backends.jax.workload import JaxWorkload
from workloads.fashion_mnist.workload import FashionMnistWorkload



class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut: y = relu(F(x) + s(x))."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(nn.Conv, self.features, use_bias=False, kernel_init=TORCH_KERNEL_INIT)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        y = nn.relu(norm(name="bn1")(conv((3, 3), self.stride, ((1, 1), (1, 1)), name="conv1")(x)))
        y = norm(name="bn2")(conv((3, 3), 1, ((1, 1), (1, 1)), name="conv2")(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = norm(name="bn_shortcut")(conv((1, 1), self.stride, "VALID", name="conv_shortcut")(x))
        return nn.relu(y + x)


class SmallResNet(nn.Module):
    widths: tuple[int, ...] = (16, 32, 64)
    num_classes: int = 10

    @nn.compact
    def __call__(self, images, train: bool, dropout_rate=None):
        del dropout_rate  # no dropout in this model
        x = jnp.transpose(images, (0, 2, 3, 1))
        x = nn.Conv(self.widths[0], (3, 3), 1, ((1, 1), (1, 1)), use_bias=False, kernel_init=TORCH_KERNEL_INIT,
                    name="conv_stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn_stem")(x))
        for i, width in enumerate(self.widths):
            x = BasicBlock(width, 1 if i == 0 else 2, name=f"blocks_{i}")(x, train)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=TORCH_KERNEL_INIT, bias_init=torch_bias_init(x.shape[-1]),
                        name="head")(x)


class Workload(FashionMnistWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return SmallResNet()

    def eval_sums(self, logits, batch) -> dict:
        targets = batch["targets"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return {
            "loss": -jnp.take_along_axis(logp, targets[:, None], axis=-1).sum(),
            "errors": (logits.argmax(-1) != targets).sum(),
            "count": jnp.asarray(float(len(targets))),
        }
