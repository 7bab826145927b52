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


# ---------------------------------------------------------------------------------------------
# The journal extension (VWL): a decorrelated learned codebook, or a memory-bank codebook

def decorrelation_loss(codebook: torch.Tensor) -> torch.Tensor:
    """VWL-L's codebook decorrelation: 0.5 * (||G||_F - ||diag(G)||_2) with G = C C^T.

    C is the codebook, (K, D) or (K, D, 1, 1), each row centred on its own mean; the loss is small
    when the words' centred vectors are mutually orthogonal. Returns a scalar tensor.
    """
    centred = codebook.flatten(1)
    centred = centred - centred.mean(dim=1, keepdim=True)
    gram = centred @ centred.T
    return 0.5 * (torch.linalg.matrix_norm(gram) - torch.linalg.vector_norm(torch.diagonal(gram)))


def _feature_vectors(features: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) feature maps -> (N * h * w, D) detached float32 vectors, one per position."""
    return features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).float()


@torch.no_grad()
def features_per_word(features: torch.Tensor, words: torch.Tensor, k_words: int):
    """Sum and count of the feature vectors each word wins: features (N, D, h, w), words (N, h, w)
    argmax word ids -> (sums (K, D), counts (K,)), float32. Sums and counts (not means) add up over
    processes, so an all-reduce of both gives the means of the whole global batch."""
    vectors = _feature_vectors(features)
    one_hot = F.one_hot(words.reshape(-1), k_words).float()
    return one_hot.T @ vectors, one_hot.sum(dim=0)


@torch.no_grad()
def ema_codebook(codebook: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor, rho: float) -> torch.Tensor:
    """VWL-M's update c_k <- rho * m_k + (1 - rho) * c_k, m_k the mean feature vector word k won
    (m_k = 0 when no vector chose k, so an unused word decays towards zero)."""
    means = sums / counts.clamp(min=1)[:, None]
    return rho * means + (1 - rho) * codebook


@torch.no_grad()
def sample_codebook(features: torch.Tensor, k_words: int, generator: torch.Generator = None) -> torch.Tensor:
    """VWL-M's first codebook: K feature vectors of the batch (N, D, h, w) drawn at random (with
    replacement, as there may be fewer vectors than words) -> (K, D)."""
    vectors = _feature_vectors(features)
    index = torch.randint(len(vectors), (k_words,), generator=generator, device="cpu").to(vectors.device)
    return vectors[index].clone()


class MemoryBankCodebook(nn.Module):
    """VWL-M's codebook: a buffer the optimizer never sees, set on the first training step to K random
    feature vectors of the batch, then after every step moved towards the mean feature each word won.

    forward() (in training) keeps the batch's features and argmax words for update(), which the
    training loop calls after the optimizer step; with several processes it passes an all-reduce
    (sums and counts of every process) and a broadcast (rank 0's first codebook), so that every
    replica holds the same codebook.
    """

    def __init__(self, k_words: int = 256, feature_dim: int = 2048, rho: float = 1e-3):
        super().__init__()
        self.k_words, self.rho = k_words, rho
        self.register_buffer("codebook", torch.empty(k_words, feature_dim))
        self.register_buffer("initialised", torch.tensor(False))
        nn.init.kaiming_normal_(self.codebook, a=math.sqrt(5))  # used by the first forward only
        self._batch = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        assignment = soft_word_assignment(features, self.codebook)
        if self.training:
            self._batch = (features.detach(), assignment.detach().argmax(dim=1))
        return assignment

    @torch.no_grad()
    def update(self, all_reduce_sum=lambda tensor: tensor, broadcast=lambda tensor: tensor, generator=None):
        """Apply this step's update (the first step: the initial draw) from the last training forward."""
        if self._batch is None:
            raise RuntimeError("MemoryBankCodebook.update() needs a training forward first")
        features, words = self._batch
        self._batch = None
        sums, counts = features_per_word(features, words, self.k_words)
        sums, counts = all_reduce_sum(sums), all_reduce_sum(counts)
        if bool(self.initialised):
            new_codebook = ema_codebook(self.codebook, sums, counts, self.rho)
        else:
            new_codebook = broadcast(sample_codebook(features, self.k_words, generator))
        self.codebook.copy_(new_codebook)
        self.initialised.fill_(True)
