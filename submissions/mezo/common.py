"""The mezo submission's facts shared by its torch and JAX versions: which parameters take weight
decay, and the self-tuning point."""

from __future__ import annotations

from harness import spec
from harness.spec import ParameterType

# Weight decay skips biases and normalisation parameters, as the official trainer skips "bias" and
# "layer_norm" names (princeton-nlp/MeZO, large_models/trainer.py).
NO_DECAY = {
    ParameterType.BIAS, ParameterType.BATCH_NORM_SCALE, ParameterType.BATCH_NORM_BIAS,
    ParameterType.LAYER_NORM_SCALE, ParameterType.LAYER_NORM_BIAS, ParameterType.ATTENTION_BIAS,
}

# Self-tuning ruleset: the paper's ε = 1e-3 and a constant learning rate from its grid for RoBERTa-large
# (1e-7 ... 1e-5), the largest, for small models trained from scratch; weight decay 0 as in its runs.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({"learning_rate": 1e-5, "epsilon": 1e-3, "weight_decay": 0.0})
