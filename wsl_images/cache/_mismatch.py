"""What a :class:`~wsl_images.HashMismatchError` tells the user to do: it depends on the file.

torch.hub's rule takes the part of a file name after its last ``-`` (``name-<hex>.pth``) as the
start of the file's sha256. For a released model file that prefix is known to be its hash, so a
mismatch means the file is corrupt, and turning the check off is never the answer. A user's URL
may only look hashed (``ckpt-epoch-10.pth``: ``10`` is an epoch), and then the check is what is
wrong: the message names the switch that turns it off, and when that is safe. Such a file once
downloaded with the switch is intact while it matches the sha256 recorded then: asked for again
without the switch, it is refused as it is (kept, nothing fetched), not called corrupt.
"""

from __future__ import annotations

__all__ = ["cached_mismatch", "download_mismatch", "unchecked_mismatch"]


def download_mismatch(
    url: str, filename: str, expected: str, actual: str, *, released: bool
) -> str:
    """The message for a download whose sha256 does not start with the prefix in its name.

    ``released``: the caller knows the prefix to be the file's hash (a published model file)."""
    head = (
        f"SHA256 of the file downloaded from {url!r} does not match its name: expected "
        f"{expected}... but got {actual}. The download was deleted."
    )
    if released:
        return (
            f"{head} {filename} is a released model file of known sha256, so this download is "
            "corrupt: cut or altered in transit, or the server (a mirror?) holds another file "
            "under this name. Try again, or check the URL / WSL_IMAGES_MIRROR."
        )
    return f"{head} {_user_hint(filename, expected, 'keep the check and fetch it again.')}"


def cached_mismatch(
    path: str, filename: str, expected: str, actual: str, *, named: bool, released: bool
) -> str:
    """The message for a cached file (offline: it is reported, not replaced) of the wrong hash.

    ``named``: ``expected`` is the prefix in the file's name (else the sha256 recorded when the
    file was downloaded unchecked: it has changed since, and is corrupt whoever's it is).
    """
    head = (
        f"The cached file {path!r} is corrupted: its sha256 is {actual}, but it should start "
        f"with {expected}. It was not loaded."
    )
    fix = (
        f"Delete it (`wsl-images cache clear {filename}`) and download it again with network "
        "access (unset WSL_IMAGES_OFFLINE)."
    )
    if not named or released:
        return f"{head} {fix}"
    return f"{head} {_user_hint(filename, expected, fix[0].lower() + fix[1:])}"


def unchecked_mismatch(url: str, path: str, filename: str, expected: str, actual: str) -> str:
    """The message for an intact cached file that was downloaded unchecked (its sha256 is the
    one recorded then), asked for again with the check on: the check, not the file, is wrong."""
    head = (
        f"{url!r} was asked for with the hash check on, but its cached file {path!r} was "
        f"downloaded with the check off: expected {expected}... but got {actual} (the sha256 "
        "recorded at that download; the file still matches it). It was not loaded, and was "
        "kept: nothing was downloaded."
    )
    fix = f"remove it (`wsl-images cache clear {filename}`) and download it again."
    return f"{head} {_user_hint(filename, expected, fix)}"


def _user_hint(filename: str, expected: str, fix: str) -> str:
    return (
        f"torch.hub's rule reads the part of the name after its last '-' ({expected!r} in "
        f"{filename}) as the start of the file's sha256. If that part is not a hash (an epoch, "
        "step or version number) and you trust where the file comes from, turn the check off: "
        "check_hash=False (CLI: --no-check-hash); its sha256 is then recorded at download, "
        "and a cached copy that changes later is caught. If the name does carry the file's "
        f"sha256, the file is corrupt or not the one named: {fix}"
    )
