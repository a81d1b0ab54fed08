"""Image decoding, in one place: every image the kit reads goes through
:func:`~cxrkit.data.images.decode.load_image` ((H, W) uint8 grey levels, upright), and
:func:`~cxrkit.data.images.scan.scan_images` decodes a dataset's images up front, in parallel, to
refuse (or exclude) unusable ones before training.

* :mod:`~cxrkit.data.images.policy` -- :class:`ImagePolicy`: how images of more than 8 bits
  (DICOM, 16-bit PNG) become 8-bit (windows, percentiles), validated like every parameter.
* :mod:`~cxrkit.data.images.raster` -- 8- and 16-bit PNG, JPEG and the rest of Pillow's formats,
  EXIF orientation.
* :mod:`~cxrkit.data.images.dicom` -- DICOM through pydicom and its pixel-data handlers
  (pylibjpeg, pylibjpeg-libjpeg, -openjpeg, -rle), and what is refused.
* :mod:`~cxrkit.data.images.decode` -- the dispatch (:func:`decode`) and :func:`load_image`.
* :mod:`~cxrkit.data.images.scan` -- the up-front check (:func:`scan_images`).
"""

from cxrkit.data.images.decode import DECODE_VERSION, Decoded, decode, load_image
from cxrkit.data.images.dicom import DECODER_PACKAGES, is_dicom
from cxrkit.data.images.policy import ImagePolicy, Unusable
from cxrkit.data.images.raster import CONVERTED_TO_GREY, EXIF_ORIENTATIONS
from cxrkit.data.images.scan import ImageScan, check_images, decoding_counts, scan_images

#: Report of the images decoded with their EXIF orientation, written to a dataset's report_dir.
REORIENTED_REPORT = "reoriented_images.csv"
REORIENTED_COLUMNS = ("image", "path", "exif_orientation", "applied")

__all__ = [
    "CONVERTED_TO_GREY",
    "DECODER_PACKAGES",
    "DECODE_VERSION",
    "EXIF_ORIENTATIONS",
    "REORIENTED_COLUMNS",
    "REORIENTED_REPORT",
    "Decoded",
    "ImagePolicy",
    "ImageScan",
    "Unusable",
    "check_images",
    "decode",
    "decoding_counts",
    "is_dicom",
    "load_image",
    "scan_images",
]
