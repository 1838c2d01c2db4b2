"""Sandbox images: the Dockerfile of the runner image and its offline builder.

``from sandbox_images import ensure_runner_image`` (see ``sandbox_images.build``).
"""


def __getattr__(name: str):
    # Lazy, so that `python -m sandbox_images.build` does not import build.py twice.
    if name in ("ensure_runner_image", "ImageBuildError"):
        from sandbox_images import build

        return getattr(build, name)
    raise AttributeError(name)


__all__ = ["ImageBuildError", "ensure_runner_image"]
