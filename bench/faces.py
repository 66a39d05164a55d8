"""How the face finder's threshold sits: the test portrait at many sizes against wallpapers.

    python bench/faces.py [--data DIR ...]

The face cascade gives each box a confidence. A box in which the eye cascade finds both eyes is
kept at any positive confidence; one without needs `faces.EYELESS_CONFIDENCE`. This prints, for
the shipped test portrait (`tests/data/portrait.jpg`) resized to 160-768 px by OpenCV's area
filter and by Lanczos, whether its face is found, with its eyes or not, and its confidence; then
for every photo in the folders (by default the wallpapers of Debian's mate-backgrounds and
lomiri-wallpapers packages: no faces) the boxes the cascade reports and the most confident of
them, and how many Studio would keep (all of them are false). Per portrait size it prints the
most confident box.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.engines import faces

PORTRAIT = Path(__file__).resolve().parents[1] / "tests" / "data" / "portrait.jpg"
PHOTO_FOLDERS = ("/usr/share/backgrounds", "/usr/share/backgrounds/mate/nature")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", help="folders of photos without faces")
    args = parser.parse_args(argv)
    portrait = Image.open(PORTRAIT).convert("RGB")
    print(f"threshold without eyes: {faces.EYELESS_CONFIDENCE}\n\nportrait (one face):")
    print("| side px | resampling | face box px | confidence | eyes found | kept |")
    print("|---|---|---|---|---|---|")
    for side in range(160, 769, 32):
        for name, resample in (("area", None), ("Lanczos", Image.Resampling.LANCZOS)):
            if resample is None:
                source = np.asarray(portrait)
                size = (side, side)
                pixels = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
            else:
                pixels = np.asarray(portrait.resize((side, side), resample))
            found = faces.candidates(pixels.astype(np.float32) / 255)
            face = max(found, default=None, key=lambda c: c.confidence)
            if face is None:
                print(f"| {side} | {name} | none | | | no |")
                continue
            print(
                f"| {side} | {name} | {face.box[2]} | {face.confidence:.2f} | {face.eyes_found} "
                f"| {face.kept} |"
            )
    print("\nphotos without faces:")
    total = kept_count = 0
    highest = -np.inf
    for folder in args.data or PHOTO_FOLDERS:
        for path in sorted(Path(folder).glob("*.jp*g")):
            image = Image.open(path).convert("RGB")
            found = faces.candidates(np.asarray(image, np.float32) / 255)
            total += len(found)
            kept_count += sum(c.kept for c in found)
            if found:
                best = max(c.confidence for c in found)
                highest = max(highest, best)
                eyes = sum(c.eyes_found for c in found)
                print(f"  {path.name}: {len(found)} boxes, best {best:.2f}, {eyes} with eyes")
    print(
        f"\n{total} boxes on photos without faces, most confident {highest:.2f}; kept: {kept_count}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
