"""ct_pipeline: a CT lung-nodule detection pipeline (research software, not a medical device).

Read it in the order the data flows:

1. ``errors``, ``paths``       -- the one error type the CLI maps to exit code 2; where data and cache live.
2. ``geometry``, ``volume``    -- patient xyz (mm) <-> voxel irc (index, row, col); the CT volume type.
3. ``loading``                 -- MHD/raw, DICOM series, single image files; ``load_ct(source)``.
4. ``series_index``, ``luna16`` -- finding series under data roots; the LUNA16 tables as one candidate table.
5. ``synth``                   -- LUNA16-format synthetic chest CTs with known nodules.
6. ``cache``, ``datasets``     -- the crop cache; classification and segmentation datasets.
7. ``models``, ``training``    -- the book-compatible networks; the one training loop.
8. ``diagnosis``, ``evaluation``, ``reports`` -- CT in, findings out; LUNA16 FROC/CPM; pictures.

Nothing here does work at import time.
"""

__version__ = "0.1.0"
