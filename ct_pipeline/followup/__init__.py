"""Follow-up: two scans of one patient -- register, match their nodules, measure growth.

Read in this order:

1. ``registration`` -- CURRENT registered to PRIOR on the lungs (SimpleITK, rigid then affine).
2. ``matching``     -- nodules paired in the registered frame; volume change and doubling time.
3. ``comparison``   -- ``compare_scans``: the two steps on two diagnosed scans; the result's JSON.
4. ``volumes``      -- each pair outlined again in both scans at one HU level.

Import from the modules themselves; importing this package loads nothing.
"""
