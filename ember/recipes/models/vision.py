"""Image classifiers of the recipes: a small MNIST CNN, a ResNet-18-style CIFAR network and an
MLP, sharing one TrainingModule body (cross-entropy; ``*_loss`` and ``*_acc`` metrics)."""

from __future__ import annotations

import ember.nn as nn
import ember.nn.functional as F
from ember.recipes.models.base import RecipeModule


class ClassifierModule(RecipeModule):
    """Subclasses set ``self.net``; inputs are normalised by ``mean``/``std`` in ``forward``."""

    mean = 0.0
    std = 1.0

    def forward(self, x):
        if self.mean != 0.0 or self.std != 1.0:
            x = (x - self.mean) / self.std
        return self.net(x)

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=True)
        self.log(f"{stage}_acc", acc, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int = 0, dataloader_idx: int = 0):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(1)


class CNNMNIST(ClassifierModule):
    """Two conv3x3+ReLU pairs with max-pooling, then a hidden Linear layer with dropout."""

    mean, std = 0.1307, 0.3081

    def __init__(
        self,
        channels=(32, 64),
        hidden: int = 128,
        dropout: float = 0.25,
        num_classes: int = 10,
        in_channels: int = 1,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=list(self.FACTORIES), logger=False)
        c1, c2 = (int(c) for c in channels)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


class BasicBlock(nn.Module):
    """ResNet's two conv3x3 + BatchNorm block with an identity (or 1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(ClassifierModule):
    """ResNet-18 for 32x32 inputs (conv3x3 stem, no max-pool; four stages of BasicBlocks with
    widths ``width * (1, 2, 4, 8)``, global average pooling)."""

    mean = 0.4734
    std = 0.2516

    def __init__(
        self,
        num_blocks=(2, 2, 2, 2),
        width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=list(self.FACTORIES), logger=False)
        layers = [
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        cin = width
        for stage, n in enumerate(num_blocks):
            cout = width * 2**stage
            for i in range(int(n)):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
        self.net = nn.Sequential(*layers)


class MLP(ClassifierModule):
    """Flatten, then Linear+ReLU(+Dropout) layers of sizes ``hidden``, then the classifier."""

    def __init__(
        self,
        input_dim: int = 784,
        hidden=(512, 512),
        num_classes: int = 10,
        dropout: float = 0.0,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=list(self.FACTORIES), logger=False)
        layers, n_in = [nn.Flatten()], int(input_dim)
        for n_out in hidden:
            layers += [nn.Linear(n_in, int(n_out)), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            n_in = int(n_out)
        layers.append(nn.Linear(n_in, num_classes))
        self.net = nn.Sequential(*layers)
