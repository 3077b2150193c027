"""MRI reconstruction with the small U-Net of `torch.py` in Flax Linen: the same layers, shapes and
initial distributions (every convolution kernel truncated-normal lecun, fan-in taken as torch takes it,
which for the transposed convolutions is their output channels; the head's bias 0), instance norm
without parameters (ε 1e-5, variance computed as torch does), LeakyReLU(0.2), channel dropout (rate 0
unless `dropout_rate` says otherwise; only its masks, drawn from JAX's keys, differ from torch's), and
SSIM computed as torch's `ssim`. Images arrive as (N, H, W) and are laid out NHWC inside the model.

    python submit.py --framework jax --workload mri_reconstruction --submission nadamw
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from flax import linen as nn

from harness.backends.jax.workload import JaxWorkload
from workloads.mri_reconstruction.workload import MriReconstructionWorkload

NUM_CHANNELS, NUM_POOL_LAYERS = 16, 3  # as torch.py (not imported: it imports torch)
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03

instance_norm = partial(nn.InstanceNorm, epsilon=1e-5, use_bias=False, use_scale=False, use_fast_variance=False)


class ConvBlock(nn.Module):
    """(3x3 conv, instance norm, LeakyReLU(0.2), channel dropout) twice."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool, dropout_rate: float):
        for name in ("conv1", "conv2"):
            x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                        kernel_init=nn.initializers.lecun_normal(), name=name)(x)
            x = nn.leaky_relu(instance_norm()(x), 0.2)
            x = nn.Dropout(dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(x)
        return x


class TransposeConvBlock(nn.Module):
    """2x2 stride-2 transposed conv, instance norm, LeakyReLU(0.2): doubles height and width.
    `transpose_kernel` makes it torch's ConvTranspose2d, kernel laid out (kh, kw, out, in)."""

    features: int

    @nn.compact
    def __call__(self, x):
        x = nn.ConvTranspose(self.features, (2, 2), strides=(2, 2), padding="VALID", use_bias=False,
                             kernel_init=nn.initializers.lecun_normal(), transpose_kernel=True, name="conv")(x)
        return nn.leaky_relu(instance_norm()(x), 0.2)


class UNet(nn.Module):
    """(batch, H, W) -> (batch, H, W); H and W need not be multiples of 2 ** num_pool_layers."""

    channels: int = NUM_CHANNELS
    num_pool_layers: int = NUM_POOL_LAYERS

    @nn.compact
    def __call__(self, images, train: bool, dropout_rate=None):
        rate = 0.0 if dropout_rate is None else dropout_rate
        x, skips = images[..., None], []
        for level in range(self.num_pool_layers):
            x = ConvBlock(self.channels << level, name=f"down_{level}")(x, train, rate)
            skips.append(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(self.channels << self.num_pool_layers, name="bottleneck")(x, train, rate)
        for i, level in enumerate(reversed(range(self.num_pool_layers))):
            skip = skips.pop()
            x = TransposeConvBlock(self.channels << level, name=f"up_transpose_{i}")(x)
            # Odd sizes: reflect-pad one row/column at the bottom/right, as torch.py does.
            pad_h, pad_w = skip.shape[1] - x.shape[1], skip.shape[2] - x.shape[2]
            if pad_h or pad_w:
                x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            x = ConvBlock(self.channels << level, name=f"up_{i}")(jnp.concatenate([x, skip], axis=-1), train, rate)
        x = nn.Conv(1, (1, 1), kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros,
                    name="head")(x)
        return x[..., 0]


def ssim(outputs, targets, mean, std, volume_max):
    """Per-image SSIM (batch,) of normalised (batch, H, W) images: torch.py's `ssim` in jnp."""
    scale, shift = std[:, None, None], mean[:, None, None]
    x, y = (outputs * scale + shift)[..., None], (targets * scale + shift)[..., None]
    data_range = jnp.where(volume_max == 0, 1.0, volume_max)[:, None, None, None]

    def window_mean(z):
        return nn.avg_pool(z, (SSIM_WINDOW, SSIM_WINDOW))

    ux, uy = window_mean(x), window_mean(y)
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    vx = cov_norm * (window_mean(x * x) - ux * ux)
    vy = cov_norm * (window_mean(y * y) - uy * uy)
    vxy = cov_norm * (window_mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.clip(s.mean(axis=(1, 2, 3)), -1.0, 1.0)


class Workload(MriReconstructionWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return UNet()

    def eval_sums(self, logits, batch) -> dict:
        targets = batch["targets"]
        return {
            "ssim": ssim(logits, targets, batch["mean"], batch["std"], batch["volume_max"]).sum(),
            "loss": jnp.abs(logits - targets).mean(axis=(1, 2)).sum(),
            "count": jnp.asarray(float(len(targets))),
        }
