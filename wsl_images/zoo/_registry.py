"""The one table describing the 16 models; everything else (hubconf, docs, CLI) is generated.

Values are those of ../shared/DESIGN.md: parameter counts are exact for torchvision's ResNet of
that configuration, "published" accuracy is the papers', "re-measured" is timm's independent
evaluation of the released files.

This module is pure data: it imports neither torch nor torchvision (they load only inside
``Weights.transforms()`` and ``imagenet_categories()``), so ``wsl-images list``/``info`` start
instantly.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._util import hash_prefix_of
from ..errors import UnknownModelError
from ._names import fold, suggest
from ._transforms import Preprocessing, eval_transforms

if TYPE_CHECKING:
    from torchvision.transforms import v2

__all__ = [
    "DEFAULT_MODEL",
    "Architecture",
    "Weights",
    "get_weights",
    "imagenet_categories",
    "list_models",
    "released_files",
    "robustness",
    "suggest_names",
]

log = logging.getLogger(__name__)

_WSL_BASE = "https://download.pytorch.org/models/"
_SSL_BASE = "https://dl.fbaipublicfiles.com/semiweaksupervision/model_files/"
LICENSE = "CC-BY-NC 4.0 (non-commercial use only)"
# 82.2 top-1 at 4 GFLOPs and 25M parameters (100 MB): the best accuracy per unit of compute in
# the zoo, fast enough for a laptop CPU. The README explains the choice.
DEFAULT_MODEL = "resnext50_32x4d_swsl"

Regime = Literal["wsl", "ssl", "swsl"]

_PAPERS: dict[Regime, str] = {
    "wsl": "Mahajan et al., Exploring the Limits of Weakly Supervised Pretraining, ECCV 2018, "
    "https://arxiv.org/abs/1805.00932",
    "ssl": "Yalniz et al., Billion-scale semi-supervised learning for image classification, "
    "2019, https://arxiv.org/abs/1905.00546",
    "swsl": "Yalniz et al., Billion-scale semi-supervised learning for image classification, "
    "2019, https://arxiv.org/abs/1905.00546",
}
_REGIME_TEXT: dict[Regime, str] = {
    "wsl": "weakly supervised (WSL): pretrained on 940M public Instagram images with 1.5K "
    "hashtags, fine-tuned on ImageNet-1k",
    "ssl": "semi-supervised (SSL): pretrained on unlabeled YFCC100M images with a teacher "
    "trained on ImageNet-1k, fine-tuned on ImageNet-1k",
    "swsl": "semi-weakly supervised (SWSL): pretrained on 940M hashtagged public images "
    "selected by a WSL teacher, fine-tuned on ImageNet-1k",
}


@dataclass(frozen=True)
class Architecture:
    """A torchvision ResNet configuration."""

    block: Literal["BasicBlock", "Bottleneck"]  # torchvision.models.resnet block class
    layers: tuple[int, int, int, int]  # blocks per stage
    groups: int = 1  # cardinality (ResNeXt "32" in 32x8d)
    width_per_group: int = 64  # bottleneck width per group (ResNeXt "8d")

    @property
    def title(self) -> str:
        """Human name, e.g. "ResNeXt-101 32x8d"."""
        depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50, (3, 4, 23, 3): 101}[self.layers]
        if self.groups == 1:
            return f"ResNet-{depth}"
        return f"ResNeXt-{depth} {self.groups}x{self.width_per_group}d"

    @property
    def num_features(self) -> int:
        """Width of the pooled features fed to ``fc``."""
        return 512 if self.block == "BasicBlock" else 2048


_R18 = Architecture("BasicBlock", (2, 2, 2, 2))
_R50 = Architecture("Bottleneck", (3, 4, 6, 3))
_X50_32X4 = Architecture("Bottleneck", (3, 4, 6, 3), 32, 4)
_X101_32X4 = Architecture("Bottleneck", (3, 4, 23, 3), 32, 4)
_X101_32X8 = Architecture("Bottleneck", (3, 4, 23, 3), 32, 8)
_X101_32X16 = Architecture("Bottleneck", (3, 4, 23, 3), 32, 16)
_X101_32X32 = Architecture("Bottleneck", (3, 4, 23, 3), 32, 32)
_X101_32X48 = Architecture("Bottleneck", (3, 4, 23, 3), 32, 48)


@functools.cache
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's public weights metadata."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# The papers' eval recipe, the same for all 16 models.
_EVAL = Preprocessing()


@dataclass(frozen=True)
class Weights:
    """One released checkpoint and everything known about it."""

    name: str  # entrypoint name, e.g. "resnext101_32x8d_wsl"
    arch: Architecture
    url: str  # origin of the released file
    regime: Regime
    num_params: int  # exact, torchvision ResNet of this config with a 1000-class fc
    gflops: float  # per 224x224 image, as published
    top1: float  # published (paper)
    top5: float
    top1_remeasured: float  # independent evaluation of the released file (timm)
    top5_remeasured: float
    file_size: int | None = None  # bytes, where published
    known_issue: str | None = None
    # Other names users know: timm's current name (the one with a "."), then the legacy names
    # of timm and older hubs. Each resolves to this row; no two rows share one.
    aliases: tuple[str, ...] = ()
    preprocessing: Preprocessing = _EVAL

    @property
    def filename(self) -> str:
        """File name in the cache, the same as torch.hub and timm use."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """Leading hex digits of the file's sha256, taken from its name."""
        prefix = hash_prefix_of(self.filename)
        if prefix is None:  # pragma: no cover - every registered file carries one
            msg = f"registered file {self.filename!r} has no hash in its name"
            raise ValueError(msg)
        return prefix

    @property
    def timm_name(self) -> str | None:
        """timm's name of these weights (None where timm has no model for them)."""
        return next((a for a in self.aliases if "." in a), None)

    @property
    def paper(self) -> str:
        return _PAPERS[self.regime]

    @property
    def description(self) -> str:
        return f"{self.arch.title}, {_REGIME_TEXT[self.regime]}"

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata in the style of torchvision's ``Weights.meta``."""
        return {
            "categories": imagenet_categories(),
            "num_params": self.num_params,
            "gflops": self.gflops,
            "file_size": self.file_size,
            "top1": self.top1,
            "top5": self.top5,
            "top1_remeasured": self.top1_remeasured,
            "top5_remeasured": self.top5_remeasured,
            "regime": self.regime,
            "paper": self.paper,
            "license": LICENSE,
            "known_issue": self.known_issue,
            "architecture": self.arch.title,
            "num_features": self.arch.num_features,
            "min_size": (self.preprocessing.crop, self.preprocessing.crop),
            "timm_name": self.timm_name,
            "aliases": list(self.aliases),
            "robustness": robustness(self.name).as_dict(),
        }

    def transforms(self) -> v2.Compose:
        """The eval preprocessing these weights expect (PIL images, uint8 or float tensors)."""
        return eval_transforms(self.preprocessing)


_SWSL_32X16_ISSUE = (
    "the released file scores about 83.3 top-1, not the published 84.8; the authors said it "
    "was saved incorrectly, and it was never fixed"
)

# Aliases: timm's current names (huggingface/pytorch-image-models, timm/models/resnet.py) and
# the legacy names timm deprecated. timm maps ig_resnext101_32x16d/32x32d/32x48d to the 32x8d
# weights and has no 32x48d model; here every name gets the model it names.
# fmt: off
_TABLE: tuple[Weights, ...] = (
    Weights("resnext101_32x8d_wsl", _X101_32X8, _WSL_BASE + "ig_resnext101_32x8-c38310e5.pth",
            "wsl", 88_791_336, 16, 82.2, 96.4, 82.720, 96.624, 356_056_638,
            aliases=("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", "ig_resnext101_32x8d")),
    Weights("resnext101_32x16d_wsl", _X101_32X16, _WSL_BASE + "ig_resnext101_32x16-c6f796b0.pth",
            "wsl", 194_026_792, 36, 84.2, 97.2, 84.166, 97.192, 777_518_664,
            aliases=("resnext101_32x16d.fb_wsl_ig1b_ft_in1k", "ig_resnext101_32x16d")),
    Weights("resnext101_32x32d_wsl", _X101_32X32, _WSL_BASE + "ig_resnext101_32x32-e4b90b00.pth",
            "wsl", 468_530_472, 87, 85.1, 97.5, 85.090, 97.442, 1_876_573_776,
            aliases=("resnext101_32x32d.fb_wsl_ig1b_ft_in1k", "ig_resnext101_32x32d")),
    Weights("resnext101_32x48d_wsl", _X101_32X48, _WSL_BASE + "ig_resnext101_32x48-3e41cc8a.pth",
            "wsl", 828_411_176, 153, 85.4, 97.6, 85.436, 97.576, 3_317_136_976,
            aliases=("ig_resnext101_32x48d",)),
    Weights("resnet18_ssl", _R18, _SSL_BASE + "semi_supervised_resnet18-d92f0530.pth",
            "ssl", 11_689_512, 2, 72.8, 91.5, 72.636, 91.416,
            aliases=("resnet18.fb_ssl_yfcc100m_ft_in1k", "ssl_resnet18")),
    Weights("resnet50_ssl", _R50, _SSL_BASE + "semi_supervised_resnet50-08389792.pth",
            "ssl", 25_557_032, 4, 79.3, 94.9, 79.252, 94.826,
            aliases=("resnet50.fb_ssl_yfcc100m_ft_in1k", "ssl_resnet50")),
    Weights("resnext50_32x4d_ssl", _X50_32X4,
            _SSL_BASE + "semi_supervised_resnext50_32x4-ddb3e555.pth",
            "ssl", 25_028_904, 4, 80.3, 95.4, 80.316, 95.386,
            aliases=("resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k", "ssl_resnext50_32x4d")),
    Weights("resnext101_32x4d_ssl", _X101_32X4,
            _SSL_BASE + "semi_supervised_resnext101_32x4-dc43570a.pth",
            "ssl", 44_177_704, 8, 81.0, 95.7, 80.936, 95.732,
            aliases=("resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k", "ssl_resnext101_32x4d")),
    Weights("resnext101_32x8d_ssl", _X101_32X8,
            _SSL_BASE + "semi_supervised_resnext101_32x8-2cfe2f8b.pth",
            "ssl", 88_791_336, 16, 81.7, 96.1, 81.620, 96.036,
            aliases=("resnext101_32x8d.fb_ssl_yfcc100m_ft_in1k", "ssl_resnext101_32x8d")),
    Weights("resnext101_32x16d_ssl", _X101_32X16,
            _SSL_BASE + "semi_supervised_resnext101_32x16-15fffa57.pth",
            "ssl", 194_026_792, 36, 81.9, 96.2, 81.856, 96.084,
            aliases=("resnext101_32x16d.fb_ssl_yfcc100m_ft_in1k", "ssl_resnext101_32x16d")),
    Weights("resnet18_swsl", _R18, _SSL_BASE + "semi_weakly_supervised_resnet18-118f1556.pth",
            "swsl", 11_689_512, 2, 73.4, 91.9, 73.286, 91.754,
            aliases=("resnet18.fb_swsl_ig1b_ft_in1k", "swsl_resnet18")),
    Weights("resnet50_swsl", _R50, _SSL_BASE + "semi_weakly_supervised_resnet50-16a12f1b.pth",
            "swsl", 25_557_032, 4, 81.2, 96.0, 81.146, 95.980,
            aliases=("resnet50.fb_swsl_ig1b_ft_in1k", "swsl_resnet50")),
    Weights("resnext50_32x4d_swsl", _X50_32X4,
            _SSL_BASE + "semi_weakly_supervised_resnext50_32x4-72679e44.pth",
            "swsl", 25_028_904, 4, 82.2, 96.3, 82.162, 96.224,
            aliases=("resnext50_32x4d.fb_swsl_ig1b_ft_in1k", "swsl_resnext50_32x4d")),
    Weights("resnext101_32x4d_swsl", _X101_32X4,
            _SSL_BASE + "semi_weakly_supervised_resnext101_32x4-3f87e46b.pth",
            "swsl", 44_177_704, 8, 83.4, 96.8, 83.268, 96.760,
            aliases=("resnext101_32x4d.fb_swsl_ig1b_ft_in1k", "swsl_resnext101_32x4d")),
    Weights("resnext101_32x8d_swsl", _X101_32X8,
            _SSL_BASE + "semi_weakly_supervised_resnext101_32x8-b4712904.pth",
            "swsl", 88_791_336, 16, 84.3, 97.2, 84.276, 97.188,
            aliases=("resnext101_32x8d.fb_swsl_ig1b_ft_in1k", "swsl_resnext101_32x8d")),
    Weights("resnext101_32x16d_swsl", _X101_32X16,
            _SSL_BASE + "semi_weakly_supervised_resnext101_32x16-f3559a9c.pth",
            "swsl", 194_026_792, 36, 84.8, 97.4, 83.340, 96.844, known_issue=_SWSL_32X16_ISSUE,
            aliases=("resnext101_32x16d.fb_swsl_ig1b_ft_in1k", "swsl_resnext101_32x16d")),
)
# fmt: on

_REGISTRY: dict[str, Weights] = {w.name: w for w in _TABLE}
# alias -> canonical name; resolved through _REGISTRY so that a replaced row is the one used.
_ALIASES: dict[str, str] = {alias: w.name for w in _TABLE for alias in w.aliases}


@dataclass(frozen=True)
class Robustness:
    """(top-1, top-5) in percent of the released file on ImageNet's robustness test sets, as
    evaluated by timm (224 crop, bilinear, crop 0.875); None where timm's table has no row."""

    imagenet_v2: tuple[float, float] | None  # ImageNet-V2 matched frequency, 10,000 images
    imagenet_r: tuple[float, float] | None  # renditions, 200 classes, 30,000 images
    imagenet_a: tuple[float, float] | None  # natural adversarial, 200 classes, 7,500 images
    imagenet_sketch: tuple[float, float] | None  # sketches, 1000 classes, 50,889 images

    def as_dict(self) -> dict[str, float | None]:
        """Flat keys: ``imagenet_v2_top1``, ``imagenet_v2_top5``, ... (None: not measured)."""
        flat: dict[str, float | None] = {}
        for key, pair in vars(self).items():
            flat[f"{key}_top1"], flat[f"{key}_top5"] = pair if pair is not None else (None, None)
        return flat

    def describe(self) -> str:
        """One line, e.g. "ImageNet-V2 73.670/92.140, ImageNet-R 75.797/86.197, ..."."""
        titles = ("ImageNet-V2", "ImageNet-R", "ImageNet-A", "ImageNet-Sketch")
        parts = [
            f"{title} {pair[0]:.3f}/{pair[1]:.3f}" if pair else f"{title} not measured"
            for title, pair in zip(titles, vars(self).values(), strict=True)
        ]
        return ", ".join(parts)


# Read row by row from timm's results tables (huggingface/pytorch-image-models, results/), rows
# named resnext101_32x8d.fb_wsl_ig1b_ft_in1k, resnet50.fb_swsl_ig1b_ft_in1k,
# resnet18.fb_ssl_yfcc100m_ft_in1k, ...: results-imagenetv2-matched-frequency.csv,
# results-imagenet-r.csv and results-sketch.csv at commit 0173a139a2c66db3a41ebfe1d8ac4fb02483642e,
# results-imagenet-a.csv at commit 049b1332531609533befd272f451991551560581. None of them has a
# row for resnext101_32x48d (timm never registered that file under its current names).
# fmt: off
_ROBUSTNESS: dict[str, Robustness] = {
    #              ImageNet-V2 (MF)  ImageNet-R        ImageNet-A        ImageNet-Sketch
    "resnext101_32x8d_wsl":
        Robustness((73.670, 92.140), (75.797, 86.197), (45.320, 70.907), (54.908, 77.541)),
    "resnext101_32x16d_wsl":
        Robustness((75.720, 92.910), (78.830, 88.473), (53.067, 76.907), (57.696, 79.907)),
    "resnext101_32x32d_wsl":
        Robustness((76.810, 93.210), (79.467, 89.197), (58.040, 80.640), (58.376, 80.398)),
    "resnext101_32x48d_wsl":
        Robustness(None, None, None, None),
    "resnet18_ssl":
        Robustness((61.470, 83.330), (35.613, 53.753), (3.747, 25.387), (21.290, 39.099)),
    "resnet50_ssl":
        Robustness((68.380, 88.550), (44.020, 61.887), (15.933, 49.413), (29.439, 49.789)),
    "resnext50_32x4d_ssl":
        Robustness((69.710, 89.420), (45.413, 62.023), (20.040, 53.560), (30.602, 50.667)),
    "resnext101_32x4d_ssl":
        Robustness((70.500, 89.750), (47.187, 63.387), (24.120, 57.387), (31.429, 52.127)),
    "resnext101_32x8d_ssl":
        Robustness((71.480, 90.470), (49.093, 65.490), (29.120, 61.000), (34.033, 55.596)),
    "resnext101_32x16d_ssl":
        Robustness((71.420, 90.530), (50.230, 66.033), (32.640, 63.987), (34.615, 55.937)),
    "resnet18_swsl":
        Robustness((62.750, 84.300), (52.320, 70.477), (6.253, 31.600), (35.866, 58.461)),
    "resnet50_swsl":
        Robustness((71.700, 90.490), (68.287, 83.307), (29.827, 63.853), (49.518, 72.330)),
    "resnext50_32x4d_swsl":
        Robustness((72.560, 90.840), (68.977, 82.800), (33.027, 65.120), (50.463, 73.366)),
    "resnext101_32x4d_swsl":
        Robustness((74.130, 91.990), (72.657, 85.163), (41.533, 71.707), (53.587, 76.337)),
    "resnext101_32x8d_swsl":
        Robustness((75.470, 92.730), (75.600, 86.943), (51.213, 78.240), (56.438, 78.931)),
    "resnext101_32x16d_swsl":
        Robustness((73.990, 92.180), (76.300, 87.743), (46.120, 72.240), (57.478, 80.373)),
}
# fmt: on


def robustness(name: str) -> Robustness:
    """ImageNet-V2/R/A/Sketch top-1/top-5 of model ``name``'s released file (timm's tables)."""
    return _ROBUSTNESS[get_weights(name).name]


def released_files() -> dict[str, str]:
    """The released files' names in the cache (as torch.hub and timm name them), each with its
    model's name: what the cache lists under a model name, and whose sha256 prefix is real."""
    return {w.filename: w.name for w in _REGISTRY.values()}


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, filtered by an fnmatch ``pattern`` if given."""
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def suggest_names(typed: str) -> list[str]:
    """Up to five model names close to ``typed`` (or whose aliases are), best first."""
    return suggest(typed, _REGISTRY, _ALIASES)


def get_weights(name: str) -> Weights:
    """The registry row of model ``name`` or of an alias (timm's or a legacy name).

    Names are matched case-insensitively (``RESNET50_SWSL`` is ``resnet50_swsl``; no two names
    differ only in case). An alias, or a name in another case, is logged (INFO) with the model
    it names; an unknown name gets the closest model names, best first.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        weights = _REGISTRY[_ALIASES[name]]
        log.info(
            "%r is an alias of %r (%s, %s)",
            name, weights.name, weights.arch.title, weights.regime.upper(),
        )  # fmt: skip
        return weights
    folded = {fold(n): n for n in _REGISTRY} | {fold(a): n for a, n in _ALIASES.items()}
    canonical = folded.get(fold(str(name)))
    if canonical is not None:
        weights = _REGISTRY[canonical]
        log.info("%r is taken as %r (names are not case-sensitive)", name, weights.name)
        return weights
    close = suggest_names(str(name))
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    msg = (
        f"Unknown model {name!r}.{hint} "
        f"Run `wsl-images list` or wsl_images.list_models() for all {len(_REGISTRY)} names "
        "(timm's names and legacy names such as 'ig_resnext101_32x8d' work too)."
    )
    raise UnknownModelError(msg)
