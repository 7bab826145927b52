"""The visual-word encoder (VWE): a learnable codebook, soft word assignment and its statistics."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_word_assignment(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Softmax over words of the cosine similarity between each feature vector and each word.

    features (N, D, h, w), codebook (K, D) -> assignment (N, K, h, w). The features are
    detached: the codebook learns, the backbone does not learn through this path.
    """
    unit_features = F.normalize(features.detach(), dim=1)
    unit_words = F.normalize(codebook, dim=1)
    cosine = torch.einsum("ndhw,kd->nkhw", unit_features, unit_words)
    return cosine.softmax(dim=1)


def word_histogram(assignment: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) -> (N, K): the soft word counts, summed (not averaged) over positions."""
    return assignment.sum(dim=(2, 3))


@torch.no_grad()
def word_targets(assignment: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) -> (N, K) float {0, 1}: word k is present if it wins the argmax somewhere."""
    n_images, k_words = assignment.shape[:2]
    winners = assignment.argmax(dim=1).flatten(1)
    targets = torch.zeros(n_images, k_words, device=assignment.device, dtype=torch.float32)
    return targets.scatter_(1, winners, 1.0)


class VisualWordEncoder(nn.Module):
    """Holds the codebook C (K, D) and returns the soft assignment of features to its words."""

    def __init__(self, k_words: int = 256, feature_dim: int = 2048):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(k_words, feature_dim))
        self.reset_parameters()

    def reset_parameters(self):
        # The paper's codebook is a (K, D, 1, 1) conv weight initialised this way; fan_in is D either way.
        nn.init.kaiming_normal_(self.codebook, a=math.sqrt(5))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return soft_word_assignment(features, self.codebook)
