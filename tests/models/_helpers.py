"""Helpers shared by the model-family tests."""

import torch
from torch import nn


def randomize_batch_norm(model: nn.Module, x: torch.Tensor) -> None:
    """Random affine parameters and the running statistics of one batch (momentum None = plain
    average), so eval mode keeps activations O(1) and every state-dict tensor matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model(x)
    model.eval()
