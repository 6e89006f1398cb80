"""Opening an image the one way the toolkit does everywhere: as displayed, i.e. turned by its EXIF orientation.

Annotators draw boxes and viewers fixate on the image as a viewer shows it, so boxes, maps and fixations all refer
to that orientation; the stored pixels of a photo with an EXIF orientation tag are rotated or mirrored from it.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

_ORIENTATION = 0x0112


def open_displayed(source: str | Path | bytes) -> tuple[Image.Image, str | None]:
    """The image at ``source`` (a path or encoded bytes), loaded and turned upright by its EXIF orientation.

    Returns the image and a note when it was turned (None otherwise). PIL's errors for unreadable data propagate.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    orientation = image.getexif().get(_ORIENTATION, 1)
    if orientation in (None, 1):
        return image, None
    return ImageOps.exif_transpose(image), (
        f"turned upright by its EXIF orientation {orientation} (boxes refer to the image as displayed)"
    )
