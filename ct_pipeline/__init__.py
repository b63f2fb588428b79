"""ct_pipeline: a CT lung-nodule detection pipeline (research software, not a medical device).

Read it in the order the data flows:

1. ``errors``, ``paths``       -- the one error type the CLI maps to exit code 2; where data and cache live.
2. ``geometry``, ``volume``    -- patient xyz (mm) <-> voxel irc (index, row, col); the CT volume type.
3. ``pacs``, ``loading``       -- a DICOMweb server as a source of series (fetched once into the cache) and a
   place for findings; MHD/raw, DICOM series, single image files, the series index; ``load_ct(source)``.
4. ``luna16``, ``catalog``     -- the LUNA16 tables as one candidate table; series on disk, split by series.
5. ``synth``                   -- LUNA16-format synthetic chest CTs with known nodules (two phantom families).
6. ``crops``, ``cache``, ``prepcache``, ``datasets`` -- the one crop convention; the crop cache; the datasets.
7. ``devices``, ``threads``, ``models``, ``training`` -- device and thread policy; the networks; the training loop.
8. ``diagnosis``, ``evaluation``, ``reports`` -- CT in, findings out (and their result files); LUNA16
   FROC/CPM; pictures and pages.
9. ``apps``, ``recipe``, ``demo`` -- the commands that do work as applications; the recommended
   training recipe; ``ct demo``.

No arrow points back: a stage imports only earlier ones (tests/test_layout.py checks it).

Nothing here does work at import time.
"""

__version__ = "0.1.0"
