"""Document partitioning: bytes of any supported format -> elements in reading order.

``partition`` (:mod:`pipeline`) picks the backend from the content (:mod:`detect`): our
PDFium text path for PDF (:mod:`pdf` with :mod:`layout`, :mod:`order`, :mod:`blocks`,
:mod:`pdf_tables`), Tesseract for images and scanned pages (:mod:`ocr`), hwp-hwpx-parser for
HWP/HWPX (:mod:`hwp`), Unstructured for Office/HTML/Markdown/EPUB/RTF/ODT (:mod:`office`,
made network-free by :mod:`offline`), and standard-library readers for text, CSV and e-mail
(:mod:`text`, :mod:`mail`). :mod:`structure` and :mod:`language` finish every element.
"""

from llmflow.ingest.partition.detect import detect_format
from llmflow.ingest.partition.language import detect_language
from llmflow.ingest.partition.pipeline import partition

__all__ = ["detect_format", "detect_language", "partition"]
