"""Stand-ins for what wraps a network in training, shared by the network tests."""
import torch


class CountingWrapper(torch.nn.Module):
    """What DistributedDataParallel looks like from outside: .module, and a forward that must be the one run
    (counted in .calls)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, images):
        self.calls += 1
        return self.module(images)
