"""Studio's own networks as spandrel architectures, so their files load like any user's model.

spandrel detects an architecture from a state dict's keys; registering Studio's restoration VAE
beside its built-in ones means the shipped file and a user's retrained one go through the same
safe reading, detection, device/dtype placement and model cache as a downloaded SCUNet.
"""

from __future__ import annotations

import spandrel
import torch
from spandrel import Architecture, ArchRegistry, ArchSupport, ImageModelDescriptor
from spandrel import SizeRequirements as SpandrelSizes

from studio.nn.restore_vae import (
    ARCHITECTURE_ID,
    MULTIPLE_OF,
    RestoreVAE,
    build_from_state,
    is_restore_vae,
)


class RestoreVAEArchitecture(Architecture[RestoreVAE]):
    def __init__(self) -> None:
        super().__init__(id=ARCHITECTURE_ID, name="Studio restoration VAE", detect=is_restore_vae)

    def load(self, state_dict: dict[str, torch.Tensor]) -> ImageModelDescriptor[RestoreVAE]:
        model = build_from_state({k: v.float() for k, v in state_dict.items()})
        config = model.config()
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="Restoration",
            tags=[f"{config['width']}w", f"{config['latent']}z", f"{config['blocks']}b"]
            + ([f"{config['paper']}p"] if config["paper"] else []),
            supports_half=True,
            supports_bfloat16=True,
            scale=1,
            input_channels=3,
            output_channels=3,
            size_requirements=SpandrelSizes(multiple_of=MULTIPLE_OF),
            call_fn=lambda net, image: net(image)[:, :3],  # a generic caller gets the photo
        )


def studio_registry() -> ArchRegistry:
    """spandrel's registry plus Studio's architectures, detected before spandrel's own."""
    registry = spandrel.MAIN_REGISTRY.copy()
    first = tuple(support.architecture.id for support in registry.architectures("insertion"))
    registry.add(ArchSupport.from_architecture(RestoreVAEArchitecture(), before=first))
    return registry


REGISTRY = studio_registry()
