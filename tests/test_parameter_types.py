"""The harness's AlgoPerf parameter-type tree for torch modules."""

from __future__ import annotations

from torch import nn

from harness.spec import ParameterType as T
from harness.backends.torch.workload import FUSED_ATTENTION_PARAMETER_TYPES, parameter_types


class Attention(nn.Module):
    algoperf_parameter_types = FUSED_ATTENTION_PARAMETER_TYPES

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(4, 12), nn.Linear(4, 4)


def test_types_follow_module_kinds_and_declared_types_win():
    model = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4), Attention(), nn.Conv1d(4, 4, 1),
                          nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert parameter_types(model) == {
        "0.weight": T.EMBEDDING, "1.weight": T.LAYER_NORM_SCALE, "1.bias": T.LAYER_NORM_BIAS,
        "2.qkv.weight": T.ATTENTION_QKV, "2.qkv.bias": T.ATTENTION_BIAS,
        "2.out.weight": T.ATTENTION_OUT, "2.out.bias": T.ATTENTION_BIAS,
        "3.weight": T.CONV_WEIGHT, "3.bias": T.BIAS, "4.weight": T.BATCH_NORM_SCALE, "4.bias": T.BATCH_NORM_BIAS,
        "5.weight": T.WEIGHT, "5.bias": T.BIAS,
    }
