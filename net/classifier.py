"""The CAM network of VWE / VWL: a ResNet, HSPP pooling and the visual-word encoder, with its losses.

Its weights load from this project's checkpoints and the authors' files: net/classifier_weights.py.
"""
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import UserError
from net.pooling import POOLS
from net.resnet import FEATURE_DIM, build_resnet
from net.vwe import MemoryBankCodebook, VisualWordEncoder, decorrelation_loss, word_histogram, word_targets

CODEBOOKS = ("learned", "memory_bank")


class VWEClassifier(nn.Module):
    """ResNet features F -> pooled class logits; with VWE also histogram and word logits.

    forward(x) -> (cls_logits, hist_logits, word_logits, word_targets); the last three are
    None when the visual-word encoder is off (the paper's baseline).
    forward(x, return_cam=True) -> (cls_logits, cams) with cams = ReLU(classifier * F), (N, C, h, w).
    """

    def __init__(self, backbone="resnet50", n_classes=20, k_words=256, pretrained=False,
                 pool="hspp", vwe=True, detach_stage2=True, hspp_gamma=2.0, hspp_levels=(1, 2, 4),
                 freeze_bn=True, codebook="learned", decov_weight=0.0, memory_rho=1e-3):
        super().__init__()
        if pool not in POOLS:
            raise UserError(f"model.pool: unknown pooling {pool!r}; choose one of {sorted(POOLS)}")
        if codebook not in CODEBOOKS:
            raise UserError(f"model.codebook: unknown codebook {codebook!r}; choose one of {', '.join(CODEBOOKS)}")
        if decov_weight and codebook != "learned":
            raise UserError("model.decov_weight applies to the learned codebook; set it to 0 with "
                            "model.codebook=memory_bank")
        self.n_classes, self.k_words = n_classes, k_words
        self.codebook_kind, self.decov_weight = codebook, decov_weight
        self.pool_name, self.use_vwe, self.detach_stage2 = pool, vwe, detach_stage2
        self.pool_kwargs = {"gamma": hspp_gamma, "levels": tuple(hspp_levels)} if pool == "hspp" else {}

        self.backbone = build_resnet(backbone, pretrained, freeze_bn)
        self.classifier = nn.Conv2d(FEATURE_DIM, n_classes, 1, bias=False)
        if vwe:
            if codebook == "learned":
                self.word_encoder = VisualWordEncoder(k_words, FEATURE_DIM)
            else:
                self.word_encoder = MemoryBankCodebook(k_words, FEATURE_DIM, memory_rho)
            self.hist_classifier = nn.Conv2d(k_words, n_classes, 1, bias=False)
            self.word_classifier = nn.Conv2d(FEATURE_DIM, k_words, 1, bias=False)
            if codebook == "memory_bank":
                self.hist_classifier.requires_grad_(False)  # VWL-M does not train the histogram branch

        # The stem is fully frozen. With stage2 detached, stage1 and stage2 never receive a
        # gradient; marking them frozen says so and keeps them out of DDP's gradient buckets.
        frozen = [self.backbone.conv1, self.backbone.bn1]
        if detach_stage2:
            frozen += [self.backbone.layer1, self.backbone.layer2]
        for module in frozen:
            module.requires_grad_(False)

    @classmethod
    def from_config(cls, model_cfg, n_classes, pretrained=None):
        """Build from the `model` section of the config for the dataset's n_classes (pretrained may be
        overridden, e.g. False at inference)."""
        return cls(backbone=model_cfg.backbone, n_classes=n_classes, k_words=model_cfg.k_words,
                   pretrained=model_cfg.pretrained if pretrained is None else pretrained,
                   pool=model_cfg.pool, vwe=model_cfg.vwe, detach_stage2=model_cfg.detach_stage2,
                   hspp_gamma=model_cfg.hspp_gamma, hspp_levels=model_cfg.hspp_levels,
                   freeze_bn=model_cfg.freeze_bn, codebook=model_cfg.get("codebook", "learned"),
                   decov_weight=model_cfg.get("decov_weight", 0.0), memory_rho=model_cfg.get("memory_rho", 1e-3))

    def features(self, images):
        resnet = self.backbone
        stage1 = resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images)))))
        stage2 = resnet.layer2(stage1)
        if self.detach_stage2:
            stage2 = stage2.detach()  # as run in VWE: stage1-2 stay as initialised
        return resnet.layer4(resnet.layer3(stage2))

    def cams(self, features):
        """Class activation maps: ReLU of the classifier applied at every position."""
        return F.relu(F.conv2d(features, self.classifier.weight))

    def forward(self, images, return_cam=False):
        features = self.features(images)
        pooled = POOLS[self.pool_name](features, **self.pool_kwargs)
        cls_logits = self.classifier(pooled[:, :, None, None]).flatten(1)
        if return_cam:
            return cls_logits, self.cams(features)
        if not self.use_vwe:
            return cls_logits, None, None, None

        assignment = self.word_encoder(features)
        hist_logits = self.hist_classifier(word_histogram(assignment)[:, :, None, None]).flatten(1)
        word_logits = self.word_classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return cls_logits, hist_logits, word_logits, word_targets(assignment)

    def training_losses(self, outputs, labels):
        """The losses this model trains with: vwe_losses, minus the histogram loss for the memory bank
        (VWL-M), plus the weighted codebook decorrelation loss (VWL-L)."""
        losses = vwe_losses(outputs, labels)
        if self.use_vwe and self.codebook_kind == "memory_bank":
            del losses["hist"]
        if self.use_vwe and self.decov_weight:
            losses["decov"] = self.decov_weight * decorrelation_loss(self.word_encoder.codebook)
        return losses

    def update_codebook(self, all_reduce_sum=lambda tensor: tensor, broadcast=lambda tensor: tensor):
        """After an optimizer step: the memory bank's update (nothing for a learned codebook)."""
        if self.use_vwe and self.codebook_kind == "memory_bank":
            self.word_encoder.update(all_reduce_sum, broadcast)

    def param_groups(self, new_layers_lr_mult):
        """[(backbone parameters, 1), (new-layer parameters, new_layers_lr_mult)], trainable ones only: the
        groups of engine.optim.build_sgd (the new layers train at 10x the backbone's rate in the paper)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        new_layers = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        return [(backbone, 1), (new_layers, new_layers_lr_mult)]


def vwe_losses(outputs, labels):
    """The three multi-label soft-margin losses of VWE (only the class loss without VWE)."""
    cls_logits, hist_logits, word_logits, targets = outputs
    losses = {"cls": F.multilabel_soft_margin_loss(cls_logits, labels)}
    if hist_logits is not None:
        losses["hist"] = F.multilabel_soft_margin_loss(hist_logits, labels)
        losses["word"] = F.multilabel_soft_margin_loss(word_logits, targets)
    return losses


def batch_losses(model, batch):
    """The training losses of a batch {"img", "label"} (engine.training's compute_losses); `model` is the
    network or the DistributedDataParallel wrapper around it, which must run the forward."""
    network = getattr(model, "module", model)
    return network.training_losses(model(batch["img"]), batch["label"])
