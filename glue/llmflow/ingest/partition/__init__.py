"""Document partitioning: bytes of any supported format -> elements in reading order.

``partition`` picks the backend from the content (:mod:`detect`): our PDFium text path for
PDF (:mod:`pdf`), Tesseract for images and scanned pages (:mod:`ocr`), hwp-hwpx-parser for
HWP/HWPX (:mod:`hwp`), Unstructured for Office/HTML/Markdown/EPUB/RTF/ODT (:mod:`office`),
and small standard-library readers for text, CSV and e-mail. All of it runs offline.
"""

from llmflow.ingest.partition.detect import detect_format
from llmflow.ingest.partition.language import detect_language
from llmflow.ingest.partition.pipeline import partition

__all__ = ["detect_format", "detect_language", "partition"]
