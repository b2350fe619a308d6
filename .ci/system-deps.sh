#!/usr/bin/env bash
# Debian packages the ingest pipeline uses at run time:
#   tesseract-ocr + kor/eng data  — OCR of scanned PDFs and images
#   libreoffice (nogui)           — legacy .doc/.ppt/.xls conversion by Unstructured
#   pandoc                        — EPUB/RTF/ODT through Unstructured
#   fonts-nanum                   — Korean font for the sample-corpus PDF generator
#   libmagic1                     — file type detection
#   prometheus                    — promtool for alert-rule tests
#   docker-registry skopeo umoci  — a real OCI registry and image tools for bundle tests
set -euo pipefail
pkgs=(tesseract-ocr tesseract-ocr-kor tesseract-ocr-eng pandoc fonts-nanum libmagic1 prometheus
      libreoffice-writer-nogui libreoffice-impress-nogui libreoffice-calc-nogui
      docker-registry skopeo umoci)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "system packages present"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
