"""Findings as files and pictures.

Read in this order (the result files themselves are ``diagnosis.result_files``):
``pictures`` (PNG views of each finding and an overview of the scan) -> ``html`` (the
``index.html`` that shows them, with the disclaimer) -> ``report`` (one series' pictures and
page entry). Matplotlib is imported only when a picture is drawn.
"""
