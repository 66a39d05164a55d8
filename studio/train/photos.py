"""Which photographs train the shipped upscalers, which choose checkpoints, and which test them.

The split is fixed by file name so that training, the checkpoint choice and the quality bench never
see each other's pictures. The names are those of Debian packages (the first two were installed
on the machine the shipped models were trained on):

- mate-backgrounds (GPL-2+), under /usr/share/backgrounds/mate/nature
- lomiri-wallpapers-16.04 (CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0), under /usr/share/backgrounds
- lomiri-wallpapers-20.04 (CC-BY-SA-3.0), also under /usr/share/backgrounds: one photograph, held
  out for validation; its other pictures, and those of lomiri-wallpapers (which depends on it),
  are not photographs and are not used

Any other folder of photographs trains too: every picture in it whose name is not held out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# Never trained on, never used to choose a checkpoint: `bench/upscale_quality.py` measures on these.
TEST_PHOTOS = (
    "Picture_1A_by_freespace.jpg",  # lomiri, CC-BY-4.0: paint brushes, a product-like still life
    "Wine_by_Jakkub_Mede.jpg",  # lomiri, CC-BY-4.0: an interior
    "seeding_by_Clements_Engelhardt.jpg",  # lomiri, CC0-1.0: dandelions (the test crop's source)
    "LadyBird.jpg",  # mate, GPL-2+: macro
    "Wood.jpg",  # mate, GPL-2+: texture
    "Garden.jpg",  # mate, GPL-2+: a flower
)
# Not trained on; training measures on them to keep its best checkpoint.
VALIDATION_PHOTOS = (
    "life_by_Aitzol_Berasategi.jpg",  # lomiri, CC-BY-4.0: a stream among rocks
    "Dune.jpg",  # mate, GPL-2+: grass
    # lomiri 20.04, CC-BY-SA-3.0: a bird on bark before a smooth, out-of-focus background, as
    # the smoother test photos are (the two above are all texture); skipped where not installed
    "Kleiber_by_Lukas_Baubkus.jpg",
)
# Not used at all: not photographs.
UNUSED_PHOTOS = (
    "umang_by_Abhishek_Mudgal.jpg",  # a colour gradient
    "Fossa_by_Jasper_Roks.jpg",  # abstract shapes
    "Painting-Colors_by__herobrine7gamer.jpg",  # stripes of colour
    "Infinite-Sea_by_Aury88.jpg",  # a night-sky composite whose stars look like dust
    "warty-final-ubuntu.png",  # lomiri-wallpapers: a gradient
    "lomiri-default-background.png",  # lomiri-wallpapers: a gradient
)

HELD_OUT = frozenset(TEST_PHOTOS + VALIDATION_PHOTOS + UNUSED_PHOTOS)


def find_photos(folders: Iterable[str | Path]) -> list[Path]:
    """Every picture directly in `folders` (not in subfolders), sorted by name, each name once."""
    found: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder of photographs.")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file():
                found.setdefault(path.name, path)
    return [found[name] for name in sorted(found)]


def training_photos(folders: Iterable[str | Path]) -> list[Path]:
    return [path for path in find_photos(folders) if path.name not in HELD_OUT]


def named_photos(folders: Iterable[str | Path], names: Iterable[str]) -> list[Path]:
    """The photos called `names` under `folders`, in the order of `names`; missing ones skipped."""
    by_name = {path.name: path for path in find_photos(folders)}
    return [by_name[name] for name in names if name in by_name]
