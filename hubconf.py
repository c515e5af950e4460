"""torch.hub entrypoints: the 16 WSL/SSL/SWSL models, generated from wsl_images' registry.

    model = torch.hub.load("<owner>/wsl-images", "resnext101_32x8d_wsl")

Helpers are imported under ``_`` names so that ``torch.hub.list`` shows exactly the 16 models.
"""

from wsl_images import entrypoints as _entrypoints

dependencies = ["torch", "torchvision", "requests", "tqdm"]

globals().update(_entrypoints())
