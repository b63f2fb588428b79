"""A PACS as a source of series and a place for findings, through DICOMweb.

Reading order: ``server`` (where, who, how: URL, credentials, TLS, timeouts, retries) ->
``fetch`` (QIDO-RS look-up, WADO-RS download into the cache folder, atomically) -> ``store``
(STOW-RS of the SEG and SR, remembered so that a re-run sends nothing twice).
Nothing here imports ``requests`` or ``dicomweb_client`` until a server is actually used.
"""
