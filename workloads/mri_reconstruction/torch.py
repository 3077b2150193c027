"""A small U-Net (Ronneberger et al., 2015) shaped like AlgoPerf fastmri's (from fastMRI's
`unet.py`): blocks of two 3x3 convolutions, each followed by instance norm, LeakyReLU(0.2) and
channel dropout; 2x2 average pooling down, 2x2 stride-2 transposed convolutions up, skip
connections by concatenation; a final 1x1 convolution (`head`). AlgoPerf uses 32 base channels
and 4 pooling layers (`algoperf/workloads/fastmri/workload.py`); this one 16 and 3.

    python submit.py --workload mri_reconstruction --submission nadamw
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness import spec
from harness.backends.torch.workload import TorchWorkload
from workloads.mri_reconstruction.workload import MriReconstructionWorkload

NUM_CHANNELS = 16  # AlgoPerf fastmri: num_channels = 32
NUM_POOL_LAYERS = 3  # AlgoPerf fastmri: num_pool_layers = 4
# SSIM settings of AlgoPerf fastmri's `ssim.py` (skimage.metrics.structural_similarity's defaults).
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03


class Dropout2d(nn.Dropout):
    """Channel dropout (AlgoPerf's CustomDropout2d); an nn.Dropout, so the harness sets its rate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, self.p, self.training)


class ConvBlock(nn.Sequential):
    """(3x3 conv, instance norm, LeakyReLU(0.2), channel dropout) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        layers = []
        for channels in (in_channels, out_channels):
            layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), nn.InstanceNorm2d(out_channels),
                       nn.LeakyReLU(0.2), Dropout2d(0.0)]
        super().__init__(*layers)


class TransposeConvBlock(nn.Sequential):
    """2x2 stride-2 transposed conv, instance norm, LeakyReLU(0.2): doubles height and width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False),
                         nn.InstanceNorm2d(out_channels), nn.LeakyReLU(0.2))


def lecun_normal_(weight: torch.Tensor) -> None:
    """Truncated (+-2 std) normal with variance 1 / fan_in, as AlgoPerf's `pytorch_default_init`."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # the std of a unit normal truncated at +-2
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class UNet(nn.Module):
    """(batch, H, W) -> (batch, H, W); H and W need not be multiples of 2 ** num_pool_layers."""

    def __init__(self, channels: int = NUM_CHANNELS, num_pool_layers: int = NUM_POOL_LAYERS) -> None:
        super().__init__()
        self.down = nn.ModuleList([ConvBlock(1, channels)])
        for level in range(num_pool_layers - 1):
            self.down.append(ConvBlock(channels << level, channels << (level + 1)))
        bottom = channels << (num_pool_layers - 1)
        self.bottleneck = ConvBlock(bottom, 2 * bottom)
        self.up_transpose = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(num_pool_layers)):
            self.up_transpose.append(TransposeConvBlock(channels << (level + 1), channels << level))
            self.up.append(ConvBlock(channels << (level + 1), channels << level))
        self.head = nn.Conv2d(channels, 1, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                lecun_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, skips = images.unsqueeze(1), []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.bottleneck(x)
        for transpose, block in zip(self.up_transpose, self.up):
            skip = skips.pop()
            x = transpose(x)
            # Odd sizes: reflect-pad one row/column at the bottom/right, as AlgoPerf does.
            pad_w, pad_h = skip.shape[-1] - x.shape[-1], skip.shape[-2] - x.shape[-2]
            if pad_w or pad_h:
                x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x).squeeze(1)


def ssim(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    volume_max: torch.Tensor,
) -> torch.Tensor:
    """Per-image SSIM (batch,) of normalised (batch, H, W) images, as AlgoPerf fastmri computes it.

    Both images are de-normalised (x * std + mean); data range = `volume_max` (1 where it is 0);
    7x7 uniform window, sample covariance (N / (N - 1)), C1 = (0.01 L)^2, C2 = (0.03 L)^2; the SSIM
    map is averaged over the pixels whose window lies inside the image (skimage crops the same
    border); values are clipped to [-1, 1].
    """
    scale, shift = std[:, None, None], mean[:, None, None]
    x, y = (outputs * scale + shift)[:, None], (targets * scale + shift)[:, None]
    data_range = torch.where(volume_max == 0, torch.ones_like(volume_max), volume_max)[:, None, None, None]

    def window_mean(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(z, SSIM_WINDOW, stride=1)

    ux, uy = window_mean(x), window_mean(y)
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    vx = cov_norm * (window_mean(x * x) - ux * ux)
    vy = cov_norm * (window_mean(y * y) - uy * uy)
    vxy = cov_norm * (window_mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).clamp(-1.0, 1.0)


class Workload(MriReconstructionWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return UNet()

    def init_model_fn(self, rng: spec.RandomState) -> tuple[nn.Module, None]:
        model, model_state = super().init_model_fn(rng)
        for name, module in model.named_modules():
            if isinstance(module, nn.ConvTranspose2d):
                self._param_types[f"{name}.weight"] = spec.ParameterType.CONV_WEIGHT
        return model, model_state

    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch["targets"]
        return {
            "ssim": ssim(logits, targets, batch["mean"], batch["std"], batch["volume_max"]).sum(),
            "loss": (logits - targets).abs().mean(dim=(1, 2)).sum(),
            "count": torch.tensor(float(len(targets))),
        }
