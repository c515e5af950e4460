"""torch.hub entrypoints: the 16 WSL/SSL/SWSL models, generated from wsl_images' registry.

    model = torch.hub.load("<owner>/wsl-images", "resnext101_32x8d_wsl")

Helpers are imported under ``_`` names so that ``torch.hub.list`` shows exactly the 16 models.
"""

from wsl_images import entrypoints as _entrypoints

# torch.hub.load refuses to call *any* entrypoint while a name listed here is not importable
# (torch/hub.py, _check_dependencies). Building a model needs torch and torchvision only, so
# only they are listed: with just those two, pretrained=False works. Fetching weights also needs
# requests and tqdm; without them a pretrained load stops with a MissingDependencyError that
# names the `pip install` to run, instead of torch.hub refusing every model up front.
dependencies = ["torch", "torchvision"]

globals().update(_entrypoints())
