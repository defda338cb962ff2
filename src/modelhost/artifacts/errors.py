"""The one error artifacts raise, and the size budget every source is held to."""

from __future__ import annotations


class ArtifactError(Exception):
    """Model data could not be made available. ``str()`` is fit to show verbatim as an
    endpoint's ``FailureReason``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Budget:
    """Counts files and bytes placed in one model directory; raises once over a cap."""

    def __init__(self, url: str, max_bytes: int, max_members: int) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.bytes = 0
        self.members = 0

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ArtifactError(
                f"Model data {self.url} has too many entries: more than {self.max_members}"
            )

    def add_bytes(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.max_bytes:
            raise ArtifactError(
                f"Model data {self.url} is too large: more than {self.max_bytes} bytes "
                "when extracted"
            )
