"""Face recognition: IResNet backbones, margin heads (AdaFace/ArcFace/CosFace), training.

``build_backbone(name, input_size, embedding_size, width=64)`` -> nn.Module mapping float
(N, 3, S, S) in [-1, 1] to unnormalised (N, embedding_size) embeddings;
``build_head(name, embedding_size, num_classes, **kw)`` -> ``head(embeddings, labels) -> logits``;
``train_fr`` / ``load_backbone`` / ``FRTrainConfig`` live in ``auggen.recognition.train``;
``load_pretrained(path)`` -> RGB [-1, 1] in, unit embeddings out, for insightface ``.pth``,
AdaFace ``.ckpt`` and this project's runs (``adaface_ir*``: AdaFace's layout, see adaface_net).
"""

from auggen.recognition.augment import AugmentConfig, augment_batch
from auggen.recognition.backbones import BACKBONES, build_backbone
from auggen.recognition.heads import HEADS, AdaFace, ArcFace, CosFace, build_head
from auggen.recognition.iresnet import IResNet
from auggen.recognition.partial_fc import sample_classes
from auggen.recognition.pretrained import Embedder, load_pretrained
from auggen.recognition.train import PRESETS, FRTrainConfig, load_backbone, train_fr

__all__ = [
    "BACKBONES",
    "HEADS",
    "PRESETS",
    "AdaFace",
    "ArcFace",
    "AugmentConfig",
    "CosFace",
    "Embedder",
    "FRTrainConfig",
    "IResNet",
    "augment_batch",
    "build_backbone",
    "build_head",
    "load_backbone",
    "load_pretrained",
    "sample_classes",
    "train_fr",
]
