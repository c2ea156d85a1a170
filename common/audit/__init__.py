"""The nearest-neighbour memorization audit: how close each synthetic case is to a site's own
training cases, in three spaces, against how close two different patients of that site are.

One concern per module: ``shifted`` (exact voxel and label-map distances over small shifts),
``features`` (the feature space), ``coarse`` (the cheap vectors that pick candidates),
``search`` (chunked top-k search), ``calibration`` (thresholds from held-out cases) and
``summary`` (the report's figures).
"""
