"""Sandbox images: the Dockerfile of the runner image and its offline builder."""

from sandbox_images.build import ImageBuildError, ensure_runner_image

__all__ = ["ImageBuildError", "ensure_runner_image"]
