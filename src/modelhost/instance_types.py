"""Resource profiles for the common ``ml.*`` instance types (pure data).

Each instance process gets the profile's vCPUs (CPU affinity and BLAS/OpenMP thread counts),
memory (an address-space limit) and GPUs (CUDA_VISIBLE_DEVICES), capped by what the host has.
Unknown but valid ``ml.*`` types fall back to a profile derived from the size suffix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    vcpus: int
    memory_gib: float
    gpus: int = 0


_SIZES = {
    "medium": (1, 4.0),
    "large": (2, 8.0),
    "xlarge": (4, 16.0),
    "2xlarge": (8, 32.0),
    "4xlarge": (16, 64.0),
    "8xlarge": (32, 128.0),
    "9xlarge": (36, 72.0),
    "12xlarge": (48, 192.0),
    "16xlarge": (64, 256.0),
    "18xlarge": (72, 144.0),
    "24xlarge": (96, 384.0),
    "48xlarge": (192, 768.0),
}

PROFILES: dict[str, Profile] = {
    "ml.t2.medium": Profile(2, 4),
    "ml.t2.large": Profile(2, 8),
    "ml.t2.xlarge": Profile(4, 16),
    "ml.t2.2xlarge": Profile(8, 32),
    "ml.m5.large": Profile(2, 8),
    "ml.m5.xlarge": Profile(4, 16),
    "ml.m5.2xlarge": Profile(8, 32),
    "ml.m5.4xlarge": Profile(16, 64),
    "ml.m5.12xlarge": Profile(48, 192),
    "ml.m5.24xlarge": Profile(96, 384),
    "ml.c5.large": Profile(2, 4),
    "ml.c5.xlarge": Profile(4, 8),
    "ml.c5.2xlarge": Profile(8, 16),
    "ml.c5.4xlarge": Profile(16, 32),
    "ml.c5.9xlarge": Profile(36, 72),
    "ml.c5.18xlarge": Profile(72, 144),
    "ml.r5.large": Profile(2, 16),
    "ml.r5.xlarge": Profile(4, 32),
    "ml.r5.2xlarge": Profile(8, 64),
    "ml.g4dn.xlarge": Profile(4, 16, 1),
    "ml.g4dn.2xlarge": Profile(8, 32, 1),
    "ml.g4dn.12xlarge": Profile(48, 192, 4),
    "ml.g5.xlarge": Profile(4, 16, 1),
    "ml.g5.2xlarge": Profile(8, 32, 1),
    "ml.g5.12xlarge": Profile(48, 192, 4),
    "ml.g5.48xlarge": Profile(192, 768, 8),
    "ml.g6.xlarge": Profile(4, 16, 1),
    "ml.p3.2xlarge": Profile(8, 61, 1),
    "ml.p3.8xlarge": Profile(32, 244, 4),
    "ml.p4d.24xlarge": Profile(96, 1152, 8),
    "ml.p5.48xlarge": Profile(192, 2048, 8),
    "ml.inf2.xlarge": Profile(4, 16),
}


def profile_for(instance_type: str) -> Profile:
    known = PROFILES.get(instance_type)
    if known is not None:
        return known
    family, _, size = instance_type.removeprefix("ml.").partition(".")
    vcpus, memory = _SIZES.get(size, (2, 8.0))
    gpus = 1 if family[:1] in {"g", "p"} and not family.startswith("ml") else 0
    return Profile(vcpus, memory, gpus)
