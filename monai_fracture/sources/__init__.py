"""Input sources: where the files to score come from (a folder, DICOMweb)."""
