"""Studio's restoration VAE: a damaged photo -> a Gaussian latent -> the clean photo.

In the spirit of Wan et al., "Bringing Old Photos Back to Life" (CVPR 2020): the degraded picture
is encoded into a Gaussian over a latent map at a quarter of its resolution (the `posterior`
head); the decoder turns a latent sample back into the photo, with skip features from the
degraded input at full and half resolution carrying the detail the small latent cannot. The
decoder predicts a residual over the input, a per-pixel Laplace scale (how unsure it is of each
pixel) and a damage probability (scratches, dust, creases) from the same features.

Trained as a conditional VAE (Sohn et al., NeurIPS 2015): in training the latent is drawn from a
recognition network that also sees the clean photo (`Recognition`, not part of the shipped
weights), and the encoder's Gaussian is pulled towards it as the prior given the scan alone, so
that the decoder learns to read the latent and the samples inference draws are alternative
restorations. (The shipped weights learnt this late, in two short CPU runs, so their latent
carries little: variations differ most where the decoder paints; see the model card.)

Inputs are eight planes, so that one tile of the picture carries everything its pixels depend on
and a tiled run equals an untiled one:

- RGB in [0, 1]: the scan after the non-local-means prefilter (`prefilter`), which the network
  refines (the residual is added to it);
- the *inpaint mask*: 1 where the decoder must paint the photo anew (the pixels there are ignored);
  0 elsewhere, where damage is kept but the photo is denoised, deblurred and de-JPEGed;
- a standard-normal noise plane that draws the latent sample: pixel-unshuffled by 4, its first
  `latent` channels are the latent's epsilon (all zeros = its mean);
- the raw scan's RGB: the detail the prefilter smoothed away along with the grain, which the
  network needs to sharpen a blurred print.

Outputs are five planes: the restored RGB, the damage probability and the uncertainty (the
standard deviation of the Laplace likelihood, in [0, 1] units). Fully convolutional; height and
width must be multiples of 4.

A file may also hold a *paper branch* (`PaperField`, keys `paper.*`): the one part that sees the
whole picture. A print's uneven paper and blotchy fading are smooth over tens of pixels, wider
than a tile's reach and too faint to tell from the photo's own shading in a small window, so the
branch reads the whole picture at a quarter of its size and estimates that blotching as a gain on
the print; the scan is divided by it before the prefilter and the tiles.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio.progress import CancelCheck, Cancelled, never_cancelled

ARCHITECTURE_ID = "StudioRestoreVAE"
IN_PLANES = 8  # prefiltered RGB, inpaint mask, latent noise, raw RGB
STEM_INPUTS = 7  # prefiltered RGB, the mask, raw RGB (both RGBs blanked under the mask)
FIRST_STEM_INPUTS = 4  # the first layout's: prefiltered RGB, the mask
OUT_PLANES = 5  # RGB, damage probability, uncertainty
MULTIPLE_OF = 4
LOG_SCALE_FLOOR = -6.0  # a smooth lower bound on the Laplace log-scale (0.6 levels): keeps the
# likelihood from exploding on the pixels the network is wrongly sure of
PAPER_SCALE = 4  # the paper branch reads the picture at 1/4 of its size
PAPER_MULTIPLE = 4 * PAPER_SCALE  # its two stride-2 steps need multiples of 4 at that size
NLM_PATCH = 7  # the prefilter's non-local means: patches of 7x7 pixels...
NLM_WINDOW = 21  # ...searched for in a 21x21 window
PREFILTER_REACH = NLM_WINDOW // 2 + NLM_PATCH // 2  # rows NLM reads around a pixel
PREFILTER_BAND = 512  # rows per band: a cancel waits for one (2 MP of a 4000 px wide scan)
PAPER_LOG_LIMIT = 0.5  # the branch's gain stays within exp(+-0.5): it flattens, it cannot repaint


class ResBlock(nn.Module):
    def __init__(self, channels: int, *, identity: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        if identity:  # start as a no-op: a block added to a trained network changes nothing yet
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class PaperField(nn.Module):
    """The print's paper texture and blotchy fading, estimated from the whole picture.

    A small U-Net at 1/4, 1/8 and 1/16 of the picture's size (it reaches a few hundred pixels of
    the full picture) reads RGB and log RGB (where a multiplicative blotch is added alike to all
    three channels, unlike most of the photo's own shading) and returns the log of a gain on the
    print, one plane at 1/4 size. Its head starts at zero: a new branch changes nothing."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 3 * width
        self.width = width
        self.stem = nn.Conv2d(6, w1, 3, padding=1)
        self.block0 = ResBlock(w1)
        self.down1 = nn.Conv2d(w1, w2, 4, stride=2, padding=1)
        self.block1 = nn.Sequential(ResBlock(w2), ResBlock(w2))
        self.down2 = nn.Conv2d(w2, w3, 4, stride=2, padding=1)
        self.block2 = nn.Sequential(ResBlock(w3), ResBlock(w3), ResBlock(w3))
        self.up2 = nn.Conv2d(w3, w2 * 4, 3, padding=1)
        self.merge1 = ResBlock(w2)
        self.up1 = nn.Conv2d(w2, w1 * 4, 3, padding=1)
        self.merge0 = ResBlock(w1)
        self.head = nn.Conv2d(w1, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, small: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) RGB at 1/4 size, h and w multiples of 4 -> (N, 1, h, w) log gain."""
        x = torch.cat([small, torch.log(small.clamp(0, 1) + 1 / 64)], dim=1)
        f0 = self.block0(F.leaky_relu(self.stem(x), 0.2))
        f1 = self.block1(F.leaky_relu(self.down1(f0), 0.2))
        f2 = self.block2(F.leaky_relu(self.down2(f1), 0.2))
        h = self.merge1(F.leaky_relu(F.pixel_shuffle(self.up2(f2), 2), 0.2) + f1)
        h = self.merge0(F.leaky_relu(F.pixel_shuffle(self.up1(h), 2), 0.2) + f0)
        return PAPER_LOG_LIMIT * torch.tanh(self.head(h) / PAPER_LOG_LIMIT)


def paper_input(rgb: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(N, 3, H, W) -> what `PaperField` reads: the picture padded (edge pixels repeated) to a
    multiple of 16 and averaged over 4x4 blocks; and the padded size."""
    height, width = rgb.shape[2:]
    pad_h, pad_w = -height % PAPER_MULTIPLE, -width % PAPER_MULTIPLE
    padded = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(padded, PAPER_SCALE), (height + pad_h, width + pad_w)


class RestoreVAE(nn.Module):
    """`width` features at full resolution, 2x at half and 4x at a quarter (the latent's);
    `blocks` residual blocks per side at a quarter, `fine` at full resolution before the head;
    a paper branch `paper` features wide (0: none)."""

    def __init__(
        self,
        width: int = 16,
        latent: int = 8,
        blocks: int = 2,
        prefilter: float = 0.0,
        fine: int = 2,
        paper: int = 0,
    ) -> None:
        super().__init__()
        if not 1 <= latent <= 16:
            raise ValueError("the latent has 1 to 16 channels (one noise plane, unshuffled by 4)")
        self.width, self.latent, self.blocks, self.fine_blocks = width, latent, blocks, fine
        # The strength of the non-local-means prefilter the network was trained behind (0 = none),
        # kept with the weights so that every caller feeds the network what it learnt from.
        self.register_buffer("prefilter_strength", torch.tensor(float(prefilter)))
        w1, w2, w4 = width, 2 * width, 4 * width
        self.stem = nn.Conv2d(STEM_INPUTS, w1, 3, padding=1)
        self.down1 = nn.Conv2d(w1, w2, 4, stride=2, padding=1)
        self.enc1 = ResBlock(w2)
        self.down2 = nn.Conv2d(w2, w4, 4, stride=2, padding=1)
        self.enc2 = nn.Sequential(*[ResBlock(w4) for _ in range(blocks)])
        self.posterior = nn.Conv2d(w4, 2 * latent, 3, padding=1)
        self.from_latent = nn.Conv2d(latent + w4, w4, 3, padding=1)
        self.dec2 = nn.Sequential(*[ResBlock(w4) for _ in range(blocks)])
        self.up2 = nn.Conv2d(w4, w2 * 4, 3, padding=1)
        self.dec1 = nn.Conv2d(w2, w2, 3, padding=1)
        self.dec1_block = ResBlock(w2)
        self.up1 = nn.Conv2d(w2, w1 * 4, 3, padding=1)
        self.dec0 = nn.Conv2d(w1, w1, 3, padding=1)
        self.fine = nn.Sequential(*[ResBlock(w1, identity=True) for _ in range(fine)])
        self.head = nn.Conv2d(w1, 3 + 1 + 1, 3, padding=1)  # residual, log-scale, damage logit
        with torch.no_grad():  # start as the identity: no residual until one is learnt
            self.head.weight[:3].zero_()
            self.head.bias[:3].zero_()
        # built last, so that a seed gives the same VAE with or without it
        self.paper = PaperField(paper) if paper else None

    def config(self) -> dict[str, float]:
        return {
            "width": self.width,
            "latent": self.latent,
            "blocks": self.blocks,
            "fine": self.fine_blocks,
            "prefilter": float(self.prefilter_strength),
            "paper": self.paper.width if self.paper is not None else 0,
        }

    def paper_gain(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) whole picture -> (N, 1, H, W): the paper's gain on it (ones without a
        paper branch). Dividing the scan by it flattens the paper."""
        if self.paper is None:
            return torch.ones_like(rgb[:, :1])
        small, (height, width) = paper_input(rgb)
        log_gain = F.interpolate(
            self.paper(small), size=(height, width), mode="bilinear", align_corners=False
        )
        return torch.exp(log_gain[:, :, : rgb.shape[2], : rgb.shape[3]])

    def encode(
        self, image: torch.Tensor, raw: torch.Tensor, inpaint: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The latent's Gaussian given the scan (training's prior): mean and log-variance at 1/4
        resolution; and the skip features."""
        keep = 1 - inpaint
        x = torch.cat([image * keep, inpaint, raw * keep], dim=1)
        f1 = F.leaky_relu(self.stem(x), 0.2)
        f2 = self.enc1(F.leaky_relu(self.down1(f1), 0.2))
        f4 = self.enc2(F.leaky_relu(self.down2(f2), 0.2))
        mean, logvar = self.posterior(f4).chunk(2, dim=1)
        return mean, logvar.clamp(-12, 6), [f1, f2, f4]

    def decode(
        self, z: torch.Tensor, skips: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual (3), Laplace log-scale (1) and damage logit (1) at full resolution."""
        f1, f2, f4 = skips
        h = F.leaky_relu(self.from_latent(torch.cat([z, f4], dim=1)), 0.2)
        h = self.dec2(h)
        h = F.leaky_relu(F.pixel_shuffle(self.up2(h), 2), 0.2)
        h = self.dec1_block(F.leaky_relu(self.dec1(h + f2), 0.2))
        h = F.leaky_relu(F.pixel_shuffle(self.up1(h), 2), 0.2)
        h = self.fine(F.leaky_relu(self.dec0(h + f1), 0.2))
        residual, raw_scale, damage = self.head(h).split([3, 1, 1], dim=1)
        return residual, LOG_SCALE_FLOOR + F.softplus(raw_scale - LOG_SCALE_FLOOR), damage

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """(N, 3 or 8, H, W) -> (N, 5, H, W): restored RGB, damage probability, uncertainty.

        Three planes (plain RGB, as a generic image-to-image caller passes) are both the
        prefiltered and the raw scan, with no inpainting and the latent's mean."""
        image = planes[:, :3]
        if planes.shape[1] not in (3, IN_PLANES):
            raise ValueError(f"the network reads 3 or {IN_PLANES} planes, not {planes.shape[1]}")
        if planes.shape[1] == IN_PLANES:
            inpaint, noise, raw = planes[:, 3:4], planes[:, 4:5], planes[:, 5:8]
        else:
            inpaint = torch.zeros_like(image[:, :1])
            noise = torch.zeros_like(image[:, :1])
            raw = image
        mean, logvar, skips = self.encode(image, raw, inpaint)
        epsilon = F.pixel_unshuffle(noise, MULTIPLE_OF)[:, : self.latent]
        z = mean + torch.exp(0.5 * logvar) * epsilon
        residual, log_scale, damage = self.decode(z, skips)
        restored = image * (1 - inpaint) + residual
        uncertainty = torch.exp(log_scale) * 2**0.5  # a Laplace's standard deviation
        return torch.cat([restored, torch.sigmoid(damage), uncertainty], dim=1)


def gaussian_kl(
    mean: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor, prior_logvar: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean, var) || N(prior_mean, prior_var)) in nats, per latent element."""
    return 0.5 * (
        prior_logvar - logvar + (logvar.exp() + (mean - prior_mean).pow(2)) / prior_logvar.exp() - 1
    )


class Recognition(nn.Module):
    """For training only: the posterior q(z | scan, clean photo), as a correction to the
    network's conditional prior p(z | scan) (its `posterior` head, which inference samples).

    The decoder learns to read the latent only if the latent knows something the skip features
    do not; this network sees the clean photo, so q carries what the scan lost (what lies under a
    scratch, detail under the grain), and the KL to p, which inference samples, keeps that
    within what the scan makes plausible. Its last layer starts at zero: q starts as p."""

    def __init__(self, width: int = 16, latent: int = 8) -> None:
        super().__init__()
        w1, w2, w4 = width, 2 * width, 4 * width
        # the clean photo, then the planes `encode` reads
        self.stem = nn.Conv2d(3 + STEM_INPUTS, w1, 3, padding=1)
        self.down1 = nn.Conv2d(w1, w2, 4, stride=2, padding=1)
        self.down2 = nn.Conv2d(w2, w4, 4, stride=2, padding=1)
        self.block = ResBlock(w4)
        self.head = nn.Conv2d(w4 + 2 * latent, 2 * latent, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        clean: torch.Tensor,
        image: torch.Tensor,
        raw: torch.Tensor,
        inpaint: torch.Tensor,
        prior_mean: torch.Tensor,
        prior_logvar: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = 1 - inpaint
        x = torch.cat([clean, image * keep, inpaint, raw * keep], dim=1)
        f = F.leaky_relu(self.stem(x), 0.2)
        f = F.leaky_relu(self.down1(f), 0.2)
        f = self.block(F.leaky_relu(self.down2(f), 0.2))
        mean, logvar = self.head(torch.cat([f, prior_mean, prior_logvar], dim=1)).chunk(2, dim=1)
        return prior_mean + mean, (prior_logvar + logvar).clamp(-12, 6)


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """The constructor arguments that built `state` (read from its shapes)."""
    width = int(state["stem.weight"].shape[0])
    latent = int(state["posterior.weight"].shape[0]) // 2
    blocks = len({key.split(".")[1] for key in state if key.startswith("enc2.")})
    fine = len({key.split(".")[1] for key in state if key.startswith("fine.")})
    prefilter = float(state["prefilter_strength"]) if "prefilter_strength" in state else 0.0
    paper = int(state["paper.stem.weight"].shape[0]) if "paper.stem.weight" in state else 0
    return {
        "width": width,
        "latent": latent,
        "blocks": blocks,
        "fine": fine,
        "prefilter": prefilter,
        "paper": paper,
    }


def is_restore_vae(state: dict[str, torch.Tensor]) -> bool:
    """Whether `state` holds this network's weights (the keys no other architecture has),
    in this layout or the first one (no raw-scan input)."""
    return all(
        key in state
        for key in ("stem.weight", "posterior.weight", "from_latent.weight", "dec0.weight")
    ) and tuple(state["stem.weight"].shape[1:]) in {(STEM_INPUTS, 3, 3), (FIRST_STEM_INPUTS, 3, 3)}


def build_from_state(state: dict[str, torch.Tensor]) -> RestoreVAE:
    """The network `state` holds. A file of the first layout (no raw-scan input) becomes the
    same network with that input unheard, so it restores as it always did."""
    config = infer_config(state)
    model = RestoreVAE(**config)  # type: ignore[arg-type]
    state = {**state, "prefilter_strength": torch.tensor(config["prefilter"])}
    if state["stem.weight"].shape[1] == FIRST_STEM_INPUTS:
        warm_start(model, state)
    else:
        model.load_state_dict(state)
    return model


def warm_start(model: RestoreVAE, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy `state` into `model` where it fits, and name what was not copied.

    A convolution that gained input channels keeps the old ones first and zeros for the new
    (a new input plane starts unheard); blocks `state` lacks keep their no-op start."""
    fresh = []
    target = model.state_dict()
    with torch.no_grad():
        for name, tensor in target.items():
            old = state.get(name)
            if old is not None and old.shape == tensor.shape:
                tensor.copy_(old)
            elif (
                old is not None
                and old.dim() == tensor.dim() > 1
                and old.shape[1] < tensor.shape[1]
                and old.shape[:1] + old.shape[2:] == tensor.shape[:1] + tensor.shape[2:]
            ):
                tensor.zero_()
                tensor[:, : old.shape[1]] = old
                fresh.append(f"{name}[:, {old.shape[1]}:]")
            else:
                fresh.append(name)
    model.load_state_dict(target)
    return fresh


def prefilter(
    rgb: np.ndarray,
    strength: float,
    cancelled: CancelCheck = never_cancelled,
    band: int = PREFILTER_BAND,
) -> np.ndarray:
    """Non-local means (OpenCV, 8-bit, 7x7 patches in a 21x21 window) of an (H, W, 3) float
    picture: the network refines this instead of the raw scan. Applied to the whole picture
    before tiling, so tiles do not change it; computed in bands of `band` rows, each seen with
    NLM's reach of rows around it (so the bands give the whole picture's result exactly) and
    `cancelled` polled between them: a large scan's prefilter takes seconds."""
    import cv2

    if strength <= 0:
        return rgb
    bgr = np.ascontiguousarray((np.clip(rgb[..., ::-1], 0, 1) * 255 + 0.5).astype(np.uint8))
    denoised = np.empty_like(bgr)
    height = bgr.shape[0]
    for top in range(0, height, band):
        if cancelled():
            raise Cancelled
        bottom = min(top + band, height)
        low, high = max(0, top - PREFILTER_REACH), min(height, bottom + PREFILTER_REACH)
        part = cv2.fastNlMeansDenoisingColored(
            bgr[low:high], None, strength, strength, NLM_PATCH, NLM_WINDOW
        )
        denoised[top:bottom] = part[top - low : bottom - low]
    return np.ascontiguousarray(denoised[..., ::-1], dtype=np.float32) / 255
