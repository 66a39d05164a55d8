"""Reproducible training of the weights Studio ships (the default upscalers).

Nothing here runs inside the application: these modules rebuild the files in `studio/assets/models`
from public photographs, with one command per file (see `studio.train.upscale`).
"""
